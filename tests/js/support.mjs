// Shared by the adapter suites: the servers pytest started (tests/api/adapters/test_js_clients.py).
import net from 'node:net';
import { randomUUID } from 'node:crypto';

export const API = process.env.OUTLAST_API_URL;
const REDIS = process.env.OUTLAST_REDIS_URL;
if (!API || !REDIS) {
  throw new Error('run these through pytest (tests/api/adapters/test_js_clients.py): it starts the API, a worker and Valkey and sets OUTLAST_API_URL / OUTLAST_REDIS_URL');
}

export const uid = () => randomUUID().replaceAll('-', '');

/** The finished run's result, from the public API. */
export async function runResult(runId) {
  const response = await fetch(`${API}/v1/runs/${runId}`);
  const detail = await response.json();
  if (detail.status !== 'completed') throw new Error(`run ${runId} is ${detail.status}`);
  return detail.result;
}

/** Opens a test workflow's gate (a Redis list it BLPOPs): one RESP exchange with Valkey. */
export function openGate(key) {
  const url = new URL(REDIS);
  const db = url.pathname.slice(1) || '0';
  const command = (...args) =>
    `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join('');
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(url.port), url.hostname);
    let replies = '';
    socket.on('error', reject);
    socket.on('data', (chunk) => {
      replies += chunk;
      if (replies.startsWith('-')) reject(new Error(`Valkey said ${replies.trim()}`));
      if ((replies.match(/\r\n/g) ?? []).length >= 2) {
        socket.end();
        resolve();
      }
    });
    socket.write(command('SELECT', db) + command('RPUSH', key, '1'));
  });
}

/** A promise and the function that settles it: awaited instead of polling. */
export function signal() {
  let fire;
  const fired = new Promise((resolve) => { fire = resolve; });
  return { fired, fire };
}
