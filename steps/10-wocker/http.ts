// HTTP as the daemon speaks it: JSON in, JSON out, and every refusal one
// sentence, {"error": "…"}, with the status that names it (http(7)'s
// spirit, Docker's API's habit). A body is read only up to api.ts's
// MAX_BODY: past it the answer is 413 and the rest is never read.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ApiError, MAX_BODY, parseJson } from './api.ts';

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) return void res.destroy();
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

export function sendError(res: ServerResponse, err: unknown): void {
  if (err instanceof ApiError) {
    const headers: Record<string, string> = err.status === 405 && err instanceof MethodNotAllowed ? { allow: err.allow.join(', ') } : {};
    // a refused body may still be arriving: answer, then drop the connection instead of reading it
    if (err.status === 413) headers.connection = 'close';
    return sendJson(res, err.status, { error: err.message }, headers);
  }
  sendJson(res, 500, { error: `the daemon failed: ${(err as Error)?.message ?? String(err)}` });
}

export class MethodNotAllowed extends ApiError {
  constructor(
    readonly allow: string[],
    method: string,
    path: string,
  ) {
    super(405, `${method} is not allowed on ${path}; allowed: ${allow.join(', ')}`);
  }
}

/** The body as text, at most MAX_BODY bytes: a larger one is 413 as soon as it is known. */
export function readBody(req: IncomingMessage): Promise<string> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_BODY) return Promise.reject(new ApiError(413, `the body is larger than ${MAX_BODY} bytes`));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (d: Buffer) => {
      size += d.length;
      if (size > MAX_BODY) {
        req.pause();
        reject(new ApiError(413, `the body is larger than ${MAX_BODY} bytes`));
        return;
      }
      chunks.push(d);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** A JSON object body; an empty body is 400 too (there is always something to say). */
export async function readJsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const body = await readBody(req);
  if (!body.trim()) throw new ApiError(400, 'the body is empty; send a JSON object');
  return parseJson(body);
}

/** A body where none is expected is drained, not parsed; a huge one is still 413. */
export async function noBody(req: IncomingMessage): Promise<void> {
  await readBody(req);
}
