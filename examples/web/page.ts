/**
 * The demo page's code (bundled by examples/web/server.ts with bin/build-browser.ts). In an app
 * of your own the import is `from 'netchan/browser'`.
 */
import { connect, type Session } from '../../lib/browser/index.js';
import type { DemoStats } from './server.js';


const CLIENTS = 8;
const $ = (id: string): HTMLElement => document.getElementById(id) as HTMLElement;
const state = { resumed: 0, down: 0, latest: undefined as DemoStats | undefined };
(window as unknown as { demo: typeof state }).demo = state;

function watch(session: Session): void {
  session.on('disconnect', () => {
    state.down++;
    show();
  });
  session.on('reconnect', () => {
    state.down--;
    state.resumed++;
    show();
  });
}

function show(): void {
  const el = $('state');
  el.textContent = state.down > 0 ? `${state.down} session${state.down > 1 ? 's' : ''} reconnecting…` : 'all sessions connected';
  el.className = state.down > 0 ? 'down' : 'up';
  $('resumed').textContent = String(state.resumed);
}

/** One client: takes a task, sends its result back, for as long as the page lives. */
async function worker(): Promise<void> {
  const session = await connect('/netchan');
  watch(session);
  const results = session.channel<number>('results');
  for await (const n of session.channel<number>('tasks')) await results.send(n);
}

const history: number[] = [];
function draw(): void {
  const canvas = $('chart') as HTMLCanvasElement;
  const g = canvas.getContext('2d') as CanvasRenderingContext2D;
  const { width: w, height: h } = canvas;
  g.clearRect(0, 0, w, h);
  // a round top: 10k, 20k, 50k, 100k, …
  const peak = Math.max(1000, ...history) * 1.1;
  const step = 10 ** Math.floor(Math.log10(peak));
  const max = [1, 2, 5, 10].map((m) => m * step).find((m) => m >= peak) as number;
  const pad = 90;
  g.font = '22px system-ui, sans-serif';
  g.fillStyle = '#5a6478';
  g.strokeStyle = '#e3e7ef';
  g.lineWidth = 2;
  for (let i = 0; i <= 4; i++) {
    const y = h - 30 - ((h - 50) * i) / 4;
    g.beginPath();
    g.moveTo(pad, y);
    g.lineTo(w, y);
    g.stroke();
    const v = (max * i) / 4;
    g.fillText(v >= 1000 ? `${v / 1000}k` : String(v), 0, y + 7);
  }
  g.textAlign = 'right';
  g.fillText('messages per second, last 30 s', w - 10, 24);
  g.textAlign = 'left';
  if (history.length < 2) return;
  g.strokeStyle = '#2f6fde';
  g.lineWidth = 4;
  g.beginPath();
  history.forEach((v, i) => {
    const x = pad + ((w - pad) * i) / 119;
    const y = h - 30 - ((h - 50) * v) / max;
    if (i === 0) g.moveTo(x, y);
    else g.lineTo(x, y);
  });
  g.stroke();
}

function render(s: DemoStats): void {
  state.latest = s;
  $('clients').textContent = String(s.clients);
  $('rate').textContent = s.rate.toLocaleString('en');
  $('inFlight').textContent = s.inFlight.toLocaleString('en');
  $('sent').textContent = s.sent.toLocaleString('en');
  $('received').textContent = s.received.toLocaleString('en');
  $('lost').textContent = `${s.lost} / ${s.duplicated}`;
  $('lostCard').className = s.lost + s.duplicated === 0 ? 'card good' : 'card bad';
  $('cuts').textContent = String(s.cuts);
  history.push(s.rate);
  if (history.length > 120) history.shift();
  draw();
}

const watcher = await connect('/netchan');
watch(watcher);
const control = watcher.channel<string>('control');
$('cut').addEventListener('click', () => void control.send('cut'));
for (let i = 0; i < CLIENTS; i++) void worker().catch((err) => console.error('worker', err));
show();
for await (const s of watcher.channel<DemoStats>('stats')) render(s);
