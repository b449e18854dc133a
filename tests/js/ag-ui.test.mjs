// The real `@ag-ui/client` HttpAgent (its event verifier runs inside runAgent) against Outlast's
// AG-UI endpoint and a real worker; the recorded events are also put through verifyEvents alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HttpAgent, verifyEvents } from '@ag-ui/client';
import { from, lastValueFrom, toArray } from 'rxjs';
import { API, runResult, uid } from './support.mjs';

test('HttpAgent runs a chat workflow turn by turn; the verifier accepts every stream', { timeout: 60_000 }, async () => {
  const agent = new HttpAgent({ url: `${API}/v1/workflows/echo_chat/ag-ui`, threadId: uid() });
  agent.messages = [{ id: uid(), role: 'user', content: 'hello agent' }];
  const events = [];
  let runId;
  const subscriber = {
    onEvent: ({ event }) => { events.push(event); },
    onRunStartedEvent: ({ event }) => { runId = event.metadata.outlast.run_id; },
  };
  const first = await agent.runAgent({ runId: uid() }, subscriber);
  const result = await runResult(runId);
  assert.equal(first.result, result);
  const replies = first.newMessages.filter((m) => m.role === 'assistant');
  assert.equal(replies.length, 1);
  assert.equal(replies[0].content, result);
  assert.equal(result, 'You said: hello agent (1 messages so far) ');
  assert.deepEqual(agent.state, { chat: { turns: 1, last: 'hello agent' } });
  const kinds = events.map((e) => e.type);
  assert.deepEqual([kinds[0], kinds.at(-1)], ['RUN_STARTED', 'RUN_FINISHED']);
  assert.ok(kinds.includes('STEP_STARTED') && kinds.includes('STEP_FINISHED') && kinds.includes('STATE_DELTA'));
  const verified = await lastValueFrom(verifyEvents(false)(from(events)).pipe(toArray()));
  assert.equal(verified.length, events.length);

  // A second turn in the same thread: the messages so far (with the reply) go back to the workflow.
  agent.messages = [...agent.messages, { id: uid(), role: 'user', content: 'once more' }];
  const second = await agent.runAgent({ runId: uid() });
  assert.equal(second.newMessages.filter((m) => m.role === 'assistant')[0].content, 'You said: once more (3 messages so far) ');
  assert.deepEqual(agent.state, { chat: { turns: 3, last: 'once more' } });
});

test('the verifier rejects a stream that breaks the protocol (it is really checking)', async () => {
  const broken = [
    { type: 'RUN_STARTED', threadId: 't', runId: 'r' },
    { type: 'TEXT_MESSAGE_CONTENT', messageId: 'm', delta: 'orphan' },
  ];
  await assert.rejects(lastValueFrom(verifyEvents(false)(from(broken)).pipe(toArray())), /No active text message/);
});
