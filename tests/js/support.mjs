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

/** Opens a test workflow's gate (a Redis list it BLPOPs): one RESP exchange with Valkey. On a
 * cluster (`redis+cluster://` seeds) the first seed is asked, and a MOVED reply is followed. */
export function openGate(key) {
  const url = new URL(REDIS.replace(/^redis\+cluster:/, 'redis:').replace(/,.*?(\/|$)/, '$1'));
  const db = url.pathname.slice(1) || '0';
  return rpushAt(url.hostname, Number(url.port), db, key);
}

function rpushAt(host, port, db, key) {
  const command = (...args) =>
    `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join('');
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, host);
    let replies = '';
    socket.on('error', reject);
    socket.on('data', (chunk) => {
      replies += chunk;
      if (!replies.startsWith('+OK\r\n') || (replies.match(/\r\n/g) ?? []).length < 2) {
        if (replies.startsWith('-')) reject(new Error(`Valkey said ${replies.trim()}`));
        return;
      }
      socket.end();
      const second = replies.slice('+OK\r\n'.length);
      const moved = /^-MOVED \d+ ([^:\s]+):(\d+)/.exec(second);
      if (moved) resolve(rpushAt(moved[1], Number(moved[2]), db, key));
      else if (second.startsWith('-')) reject(new Error(`Valkey said ${second.trim()}`));
      else resolve();
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
