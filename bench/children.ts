/**
 * Benchmark processes: forks a bench module (through tsx when it is TypeScript; with `--expose-gc`) with an IPC
 * channel, waits for its typed messages, and makes sure every child dies with the parent (normal
 * exit, an error, SIGINT or SIGTERM). A child exits by itself when the parent goes (IPC disconnect).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** Every message between a bench parent and its children: a `type` and anything else. */
export type Message = { type: string } & Record<string, unknown>;

const live = new Set<ChildProcess>();

/** SIGKILLs every child still running (idempotent). */
export function killAll(): void {
  for (const child of live) child.kill('SIGKILL');
  live.clear();
}
process.once('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    killAll();
    process.exit(130);
  });
}

/** One forked child. */
export class Child {
  readonly process: ChildProcess;
  private readonly inbox: Message[] = [];
  private waiter: { type: string; resolve: (m: Message) => void; reject: (e: Error) => void } | null = null;
  private exited: Error | null = null;

  constructor(
    readonly name: string,
    script: URL,
    args: string[],
    env: Record<string, string>,
    /** More node options, e.g. `--cpu-prof`. */
    execArgv: string[] = [],
  ) {
    this.process = fork(fileURLToPath(script), args, {
      // a compiled module (the tsc build, as a user runs netchan) needs no tsx
      execArgv: [...(script.pathname.endsWith('.ts') ? ['--import', 'tsx'] : []), '--expose-gc', ...execArgv],
      env: { ...process.env, ...env },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    live.add(this.process);
    this.process.on('message', (m: Message) => {
      if (m.type === 'error') return this.fail(new Error(`${name}: ${String(m.message)}`));
      const w = this.waiter;
      if (w && (w.type === m.type || w.type === '*')) {
        this.waiter = null;
        w.resolve(m);
      } else this.inbox.push(m);
    });
    this.process.once('exit', (code, signal) => {
      live.delete(this.process);
      this.fail(new Error(`${name} exited (${signal ?? code})`));
    });
  }

  private fail(err: Error): void {
    this.exited ??= err;
    const w = this.waiter;
    this.waiter = null;
    w?.reject(err);
  }

  send(message: Message): void {
    if (this.process.connected) this.process.send(message);
  }

  /** The next message of `type` (earlier messages of other types are kept), within `timeoutMs`. */
  next(type: string, timeoutMs: number): Promise<Message> {
    const i = this.inbox.findIndex((m) => m.type === type);
    if (i >= 0) return Promise.resolve(this.inbox.splice(i, 1)[0]!);
    if (this.exited) return Promise.reject(this.exited);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new Error(`${this.name}: no '${type}' within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = {
        type,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  /** Sends `request` and waits for the answer of type `answer`. */
  ask(request: Message, answer: string, timeoutMs: number): Promise<Message> {
    const p = this.next(answer, timeoutMs);
    this.send(request);
    return p;
  }

  /** Asks the child to exit, SIGKILLs it after `graceMs`. */
  stop(graceMs = 2000): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      this.process.once('exit', () => resolve());
      this.send({ type: 'exit' });
      setTimeout(() => this.process.kill('SIGKILL'), graceMs).unref();
    });
  }
}

/**
 * The child's side: handlers by message type; an `exit` message or the parent going away ends
 * the process; a handler that throws reports `error` to the parent and exits 1.
 */
export function serve(handlers: Record<string, (m: Message) => unknown>): void {
  const report = (err: unknown) => {
    process.send?.({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    setTimeout(() => process.exit(1), 100);
  };
  process.on('message', (m: Message) => {
    if (m.type === 'exit') process.exit(0);
    const h = handlers[m.type];
    if (!h) return report(new Error(`unknown message ${m.type}`));
    try {
      const r = h(m);
      if (r instanceof Promise) r.catch(report);
    } catch (err) {
      report(err);
    }
  });
  process.on('disconnect', () => process.exit(0));
  process.on('uncaughtException', report);
  process.on('unhandledRejection', report);
}

/** `process.send` for a child, typed. */
export function tell(message: Message): void {
  process.send?.(message);
}

/** Memory after a forced full gc (needs --expose-gc). */
export function memoryAfterGc(): NodeJS.MemoryUsage {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) {
    gc();
    gc();
  }
  return process.memoryUsage();
}

/** Runs `task(i)` for i in [0, count) with at most `limit` running at once. */
export async function pool(count: number, limit: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
}

/** 1234567 → "1.23 M", 12345 → "12.3 k". */
export function rate(n: number): string {
  if (!Number.isFinite(n)) return '-';
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} k`;
  return n.toFixed(0);
}

/** A markdown table (docs/benchmarks.md carries it as printed). */
export function table(head: string[], rows: string[][]): string {
  const line = (r: string[]) => `| ${r.join(' | ')} |`;
  const align = head.map((_, i) => (i === 0 ? '---' : '---:'));
  return [line(head), line(align), ...rows.map(line)].join('\n');
}
