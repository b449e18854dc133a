// The real `ai` package (DefaultChatTransport, readUIMessageStream, AbstractChat: useChat's engine)
// against Outlast's chat endpoint and a real worker.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AbstractChat, DefaultChatTransport, readUIMessageStream } from 'ai';
import { API, openGate, runResult, signal, uid } from './support.mjs';

const api = `${API}/v1/chat/echo_chat`;
const userMessage = (text) => ({ id: uid(), role: 'user', parts: [{ type: 'text', text }] });
const isAbandoned = (part) => Boolean(part.providerMetadata?.outlast?.abandoned);
const answerOf = (message) =>
  message.parts.filter((p) => p.type === 'text' && !isAbandoned(p)).map((p) => p.text).join('');

async function read(stream, onMessage = () => {}) {
  let last;
  for await (const message of readUIMessageStream({ stream, terminateOnError: true })) {
    last = message;
    await onMessage(message);
  }
  return last;
}

/** useChat without React: AbstractChat over a plain array, telling us when messages change. */
class NodeChat extends AbstractChat {
  constructor({ messages = [], onChange = () => {}, ...init }) {
    const state = {
      status: 'ready', error: undefined, messages,
      pushMessage(m) { state.messages = [...state.messages, m]; onChange(state.messages); },
      popMessage() { state.messages = state.messages.slice(0, -1); onChange(state.messages); },
      replaceMessage(i, m) {
        state.messages = state.messages.map((old, j) => (j === i ? structuredClone(m) : old));
        onChange(state.messages);
      },
      snapshot: (thing) => structuredClone(thing),
    };
    super({ ...init, state });
  }
}

test('DefaultChatTransport streams the reply and the assembled message equals the run result', { timeout: 60_000 }, async () => {
  const transport = new DefaultChatTransport({ api });
  const stream = await transport.sendMessages({
    chatId: uid(), messages: [userMessage('hello from node')], trigger: 'submit-message',
    messageId: undefined, abortSignal: undefined,
  });
  const message = await read(stream);
  assert.equal(message.role, 'assistant');
  assert.equal(answerOf(message), await runResult(message.id));
  assert.equal(answerOf(message), 'You said: hello from node (1 messages so far) ');
  assert.ok(message.parts.some((p) => p.type === 'step-start'));
  const data = Object.fromEntries(message.parts.filter((p) => p.type.startsWith('data-')).map((p) => [p.type, p.data]));
  assert.equal(data['data-outlast-run'].status, 'completed');
  assert.equal(data['data-outlast-status'].message, 'answering');
  assert.deepEqual(data['data-outlast-object'].value, { turns: 1, last: 'hello from node' });
});

test("a failed try's text is closed and marked; the answer is the retry's alone", { timeout: 60_000 }, async () => {
  const transport = new DefaultChatTransport({ api, body: { fail_first: uid() } });
  const stream = await transport.sendMessages({
    chatId: uid(), messages: [userMessage('flaky')], trigger: 'submit-message',
    messageId: undefined, abortSignal: undefined,
  });
  const message = await read(stream);
  const texts = message.parts.filter((p) => p.type === 'text');
  assert.equal(texts.length, 2);
  assert.equal(texts[0].providerMetadata.outlast.abandoned, 'retry');
  assert.equal(texts[0].text, 'You ');
  assert.equal(texts[0].state, 'done');
  const marks = message.parts.filter((p) => p.type === 'data-outlast-abandoned');
  assert.deepEqual(marks.map((p) => [p.id, p.data.reason]), [[texts[0].providerMetadata.outlast.id, 'retry']]);
  assert.equal(answerOf(message), await runResult(message.id));
});

test('a resume call mid-answer (reconnectToStream) yields the full answer once', { timeout: 60_000 }, async () => {
  const gate = `gate:${uid()}`;
  const chatId = uid();
  const transport = new DefaultChatTransport({ api, body: { gate, pause: 3 } });
  const abort = new AbortController();
  const first = await transport.sendMessages({
    chatId, messages: [userMessage('one two three')], trigger: 'submit-message',
    messageId: undefined, abortSignal: abort.signal,
  });
  const midAnswer = signal();
  const reading = read(first, (m) => { if (answerOf(m)) midAnswer.fire(); }).catch((e) => e);
  await midAnswer.fired; // the answer is on screen, held at the gate: now the page goes away
  abort.abort();
  await reading;

  const resumed = await transport.reconnectToStream({ chatId });
  assert.ok(resumed, 'the chat has an answer in progress');
  let opened = false;
  const message = await read(resumed, async (m) => {
    if (!opened && answerOf(m)) {
      opened = true; // the replay has reached the answer so far: let the run go on
      await openGate(gate);
    }
  });
  const result = await runResult(message.id);
  assert.equal(answerOf(message), result);
  assert.equal(answerOf(message), 'You said: one two three (1 messages so far) ');
  assert.equal(await transport.reconnectToStream({ chatId }), null); // 204: nothing in progress
});

test('useChat resume after a refresh mid-answer ends with one complete assistant message', { timeout: 60_000 }, async () => {
  const gate = `gate:${uid()}`;
  const chatId = uid();
  let held = { gate, pause: 3 };
  const transport = new DefaultChatTransport({ api, body: () => held });
  const midAnswer = signal();
  const page1 = new NodeChat({
    id: chatId, transport,
    onChange: (messages) => { if (messages.some((m) => m.role === 'assistant' && answerOf(m))) midAnswer.fire(); },
  });
  const sending = page1.sendMessage({ text: 'refresh me' });
  await midAnswer.fired;
  await page1.stop(); // the tab is reloaded: only the user's message was saved
  await sending;
  const saved = page1.messages.filter((m) => m.role === 'user');

  let opened;
  const page2 = new NodeChat({
    id: chatId, transport, messages: saved,
    onChange: (messages) => {
      if (!opened && messages.some((m) => m.role === 'assistant' && answerOf(m))) {
        held = {}; // later turns are not held at a gate
        opened = openGate(gate);
      }
    },
  });
  await page2.resumeStream(); // what useChat({resume: true}) calls on mount
  await opened;
  assert.equal(page2.status, 'ready', String(page2.error));
  const assistants = page2.messages.filter((m) => m.role === 'assistant');
  assert.equal(assistants.length, 1);
  assert.equal(answerOf(assistants[0]), await runResult(assistants[0].id));
  assert.equal(answerOf(assistants[0]), 'You said: refresh me (1 messages so far) ');

  // The next turn sends the whole conversation back: the workflow sees three messages.
  await page2.sendMessage({ text: 'and again' });
  const last = page2.messages.at(-1);
  assert.equal(answerOf(last), 'You said: and again (3 messages so far) ');

  const page3 = new NodeChat({ id: chatId, transport, messages: page2.messages });
  await page3.resumeStream(); // 204: nothing in progress, nothing changes
  assert.equal(page3.messages.length, 4);
});
