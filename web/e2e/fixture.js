// The relays of the end-to-end tests: runs tests/src/bin/web-e2e-fixture.rs (our daemon
// and nostr-rs-relay on loopback, preloaded with a corpus), reads what it expects, and
// sends it commands (publish, stop, start) over its standard input.

import { spawn } from "node:child_process";
import { createInterface } from "node:readline";

export class Fixture {
  /** Starts the fixture binary at `path`; resolves once it printed its expectation. */
  static async start(path, env = {}) {
    const child = spawn(path, [], { stdio: ["pipe", "pipe", "inherit"], env: { ...process.env, ...env } });
    const fixture = new Fixture(child);
    fixture.expected = await fixture.next(300_000);
    return fixture;
  }

  constructor(child) {
    this.child = child;
    this.waiting = [];
    this.lines = [];
    this.exited = new Promise((resolve) => child.once("exit", resolve));
    child.once("exit", (code) => {
      for (const { fail } of this.waiting.splice(0)) fail(new Error(`the fixture exited (${code})`));
    });
    createInterface({ input: child.stdout }).on("line", (line) => {
      const waiter = this.waiting.shift();
      if (waiter) waiter.ok(line);
      else this.lines.push(line);
    });
    process.once("exit", () => child.kill("SIGKILL"));
  }

  /** The next JSON line it prints. */
  next(timeoutMs = 60_000) {
    const line = this.lines.shift();
    if (line !== undefined) return Promise.resolve(JSON.parse(line));
    return new Promise((ok, fail) => {
      const timer = setTimeout(() => fail(new Error("the fixture did not answer in time")), timeoutMs);
      this.waiting.push({
        ok: (l) => { clearTimeout(timer); ok(JSON.parse(l)); },
        fail: (e) => { clearTimeout(timer); fail(e); },
      });
    });
  }

  /** Sends `command` ("publish", "stop", "start") and resolves to its answer. */
  async command(command) {
    const answer = this.next();
    this.child.stdin.write(`${command}\n`);
    return answer;
  }

  /** Stops the relays and waits for the process to end. */
  async quit() {
    if (this.child.exitCode !== null) return;
    this.child.stdin.end("quit\n");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 30_000);
    await this.exited;
    clearTimeout(timer);
  }
}
