/**
 * Events in the order they happened, awaited one at a time: tests wait for
 * the next event instead of sleeping.
 */
export class Channel {
  #items = [];
  #waiting = [];

  push(item) {
    const waiter = this.#waiting.shift();
    if (waiter) waiter(item);
    else this.#items.push(item);
  }

  next() {
    if (this.#items.length) return Promise.resolve(this.#items.shift());
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  /** What has arrived and nobody took yet. */
  get pending() {
    return [...this.#items];
  }
}
