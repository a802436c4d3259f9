/**
 * Small queue structures for the channel's hot path: a ring-buffer deque for values and an
 * intrusive doubly linked list for waiters, so that an aborted wait is removed in O(1) and
 * leaves nothing behind.
 */

/** What an empty Deque holds until its first value: most of a server's idle streams never get one. */
const NONE: never[] = [];

/** A growable ring buffer with O(1) push, pop, shift and unshift. */
export class Deque<T> {
  private items: (T | undefined)[] = NONE;
  private head = 0;
  private size = 0;
  /** Slots made at the first value. */
  private readonly initial: number;

  constructor(initialCapacity = 16) {
    let cap = 16;
    while (cap < initialCapacity && cap < 1024) cap *= 2;
    this.initial = cap;
  }

  get length(): number {
    return this.size;
  }

  push(value: T): void {
    if (this.size === this.items.length) this.grow();
    this.items[(this.head + this.size) & (this.items.length - 1)] = value;
    this.size++;
  }

  unshift(value: T): void {
    if (this.size === this.items.length) this.grow();
    this.head = (this.head - 1) & (this.items.length - 1);
    this.items[this.head] = value;
    this.size++;
  }

  /** Removes and returns the first value; the caller checks `length` first. */
  shift(): T {
    const value = this.items[this.head] as T;
    this.items[this.head] = undefined;
    this.head = (this.head + 1) & (this.items.length - 1);
    this.size--;
    return value;
  }

  /** Removes and returns the last value; the caller checks `length` first. */
  pop(): T {
    const i = (this.head + this.size - 1) & (this.items.length - 1);
    const value = this.items[i] as T;
    this.items[i] = undefined;
    this.size--;
    return value;
  }

  peek(): T | undefined {
    return this.size === 0 ? undefined : this.items[this.head];
  }

  clear(): T[] {
    const out: T[] = [];
    while (this.size > 0) out.push(this.shift());
    return out;
  }

  private grow(): void {
    const old = this.items;
    const next = new Array<T | undefined>(old.length === 0 ? this.initial : old.length * 2);
    for (let i = 0; i < this.size; i++) next[i] = old[(this.head + i) & (old.length - 1)];
    this.items = next;
    this.head = 0;
  }
}

/** A node of a {@link WaitList}; waiters extend it. */
export interface WaitNode {
  prev: WaitNode | null;
  next: WaitNode | null;
  /** The list the node is in, or null once removed. */
  list: WaitList<WaitNode> | null;
}

/** An intrusive FIFO list: O(1) append, take-first and removal from anywhere. */
export class WaitList<N extends WaitNode> {
  private head: N | null = null;
  private tail: N | null = null;
  size = 0;

  push(node: N): void {
    node.prev = this.tail;
    node.next = null;
    node.list = this as unknown as WaitList<WaitNode>;
    if (this.tail) this.tail.next = node;
    else this.head = node;
    this.tail = node;
    this.size++;
  }

  /** Puts `node` first, ahead of everything waiting. */
  unshift(node: N): void {
    node.prev = null;
    node.next = this.head;
    node.list = this as unknown as WaitList<WaitNode>;
    if (this.head) this.head.prev = node;
    else this.tail = node;
    this.head = node;
    this.size++;
  }

  shift(): N | null {
    const node = this.head;
    if (node) this.remove(node);
    return node;
  }

  peek(): N | null {
    return this.head;
  }

  remove(node: N): void {
    if (node.list !== (this as unknown as WaitList<WaitNode>)) return;
    if (node.prev) node.prev.next = node.next;
    else this.head = node.next as N | null;
    if (node.next) node.next.prev = node.prev;
    else this.tail = node.prev as N | null;
    node.prev = node.next = null;
    node.list = null;
    this.size--;
  }
}
