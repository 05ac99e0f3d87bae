// The launcher's half of exec-server.ts: it numbers each request, sends it
// to the jail's PID 1 on the channel, and gathers what comes back.
export interface ExecResult {
  exitCode: number;
  /** stdout and stderr as the command wrote them, interleaved. */
  output: string;
  stdout: string;
  stderr: string;
}

interface Pending {
  chunks: { fd: number; data: Buffer }[];
  resolve: (r: ExecResult) => void;
}

export class ExecClient {
  #send: ((line: string) => void) | undefined;
  #next = 1;
  #pending = new Map<number, Pending>();

  /** LaunchOptions.onChannel: how to reach the init. */
  attach(send: (line: string) => void): void {
    this.#send = send;
  }

  /** LaunchOptions.onMessage: returns true when the line was an exec reply. */
  onMessage(line: string): boolean {
    const space = line.indexOf(' ');
    const kind = line.slice(0, space);
    if (kind !== 'out' && kind !== 'exit') return false;
    const msg = JSON.parse(line.slice(space + 1)) as { id: number; fd?: number; data?: string; status?: number };
    const p = this.#pending.get(msg.id);
    if (!p) return true;
    if (kind === 'out') p.chunks.push({ fd: msg.fd ?? 1, data: Buffer.from(msg.data ?? '', 'base64') });
    else {
      this.#pending.delete(msg.id);
      const of = (fd?: number) => Buffer.concat(p.chunks.filter((c) => fd === undefined || c.fd === fd).map((c) => c.data)).toString('utf8');
      p.resolve({ exitCode: msg.status ?? 1, output: of(), stdout: of(1), stderr: of(2) });
    }
    return true;
  }

  /** Runs argv inside the jail, as a child of its PID 1. */
  run(argv: string[], env: Record<string, string> = {}): Promise<ExecResult> {
    if (!this.#send) return Promise.reject(new Error('the jail is not running yet'));
    const id = this.#next++;
    return new Promise((resolve) => {
      this.#pending.set(id, { chunks: [], resolve });
      this.#send!(`exec ${JSON.stringify({ id, argv, env })}`);
    });
  }

  /** The jail ended: nothing pending will ever answer. */
  close(): void {
    for (const [id, p] of this.#pending) {
      this.#pending.delete(id);
      p.resolve({ exitCode: 137, output: 'the jail ended\n', stdout: '', stderr: 'the jail ended\n' });
    }
    this.#send = undefined;
  }
}
