// The daemon's API: paths and methods, in the spirit of Docker's Engine API
// (POST /containers/create, GET /containers/json, …) with fewer words:
//   GET    /run?rootfs=NAME&hostname=H&cmd=PROG   the text's own wocker, a GET with three parameters
//   POST   /jails {image, hostname, cmd, …}       201 {"id"}: a jail, running
//   GET    /jails                                 every jail (records.ts JailView)
//   GET    /jails/ID                              one
//   GET    /jails/ID/logs[?follow=1]              its stdout and stderr, text/plain
//   POST   /jails/ID/exec {cmd}                   {"exitCode","output"}: a command beside the target
//   POST   /jails/ID/stop                         SIGTERM, then SIGKILL after the grace period
//   DELETE /jails/ID[?force=1]                    its record (force: stop it first)
//   GET    /images                                step 09's images
//   GET    /info                                  jails running, the pool's slots (docker info)
//   GET    /_ping                                 "is a daemon there?" (Docker's name)
// The path is matched as sent, never normalised: an id is 12 hex digits or
// the path names nothing (404); `..` or %2e%2e never reach the disk.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { listImages } from '../09-layers/images.ts';
import { ApiError, checkExecRequest, checkJailRequest, checkRunQuery, JAIL_ID } from './api.ts';
import { MethodNotAllowed, noBody, readJsonBody, sendJson } from './http.ts';
import { createJail, daemonInfo, execIn, jailView, listJails, removeJail, stopJail } from './jails.ts';
import { sendLog } from './logs.ts';

type Handler = (req: IncomingMessage, res: ServerResponse, id: string, query: URLSearchParams) => Promise<void>;
type Route = { path: RegExp; methods: Record<string, Handler> };

const ID = JAIL_ID.source.slice(1, -1); // the id's pattern, without its anchors

/** ?force=1, ?follow=true: a yes or a no, nothing else. */
function yes(query: URLSearchParams, name: string): boolean {
  const v = query.get(name);
  if (v === null || v === '0' || v === 'false') return false;
  if (v === '1' || v === 'true' || v === '') return true;
  throw new ApiError(400, `?${name} must be 1 or 0, not ${JSON.stringify(v.slice(0, 20))}`);
}

const routes: Route[] = [
  {
    path: /^\/run$/,
    methods: {
      GET: async (req, res, _id, q) => {
        await noBody(req);
        sendJson(res, 201, { id: await createJail(checkRunQuery(q)) });
      },
    },
  },
  {
    path: /^\/jails$/,
    methods: {
      GET: async (req, res) => {
        await noBody(req);
        sendJson(res, 200, listJails());
      },
      POST: async (req, res) => {
        const jail = checkJailRequest(await readJsonBody(req));
        sendJson(res, 201, { id: await createJail(jail) });
      },
    },
  },
  {
    path: new RegExp(`^/jails/(${ID})$`),
    methods: {
      GET: async (req, res, id) => {
        await noBody(req);
        sendJson(res, 200, jailView(id));
      },
      DELETE: async (req, res, id, q) => {
        await noBody(req);
        await removeJail(id, yes(q, 'force'));
        sendJson(res, 200, { id, removed: true });
      },
    },
  },
  {
    path: new RegExp(`^/jails/(${ID})/logs$`),
    methods: {
      GET: async (req, res, id, q) => {
        await noBody(req);
        const follow = yes(q, 'follow');
        jailView(id);
        await sendLog(id, res, follow);
      },
    },
  },
  {
    path: new RegExp(`^/jails/(${ID})/exec$`),
    methods: {
      POST: async (req, res, id) => {
        const { cmd } = checkExecRequest(await readJsonBody(req));
        jailView(id);
        sendJson(res, 200, await execIn(id, cmd));
      },
    },
  },
  {
    path: new RegExp(`^/jails/(${ID})/stop$`),
    methods: {
      POST: async (req, res, id) => {
        await noBody(req);
        sendJson(res, 200, await stopJail(id));
      },
    },
  },
  {
    path: /^\/images$/,
    methods: {
      GET: async (req, res) => {
        await noBody(req);
        sendJson(res, 200, listImages().map((i) => ({ name: i.name, layers: i.layers.length, bytes: i.bytes, created: i.created ?? null, made: !i.notMade })));
      },
    },
  },
  {
    path: /^\/info$/,
    methods: {
      GET: async (req, res) => {
        await noBody(req);
        sendJson(res, 200, daemonInfo());
      },
    },
  },
  {
    path: /^\/_ping$/,
    methods: {
      GET: async (req, res) => {
        await noBody(req);
        sendJson(res, 200, { ok: true, pid: process.pid });
      },
    },
  },
];

/** One request: find its route and method, or say which exist. */
export async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const raw = req.url ?? '/';
  const q = raw.indexOf('?');
  const path = q === -1 ? raw : raw.slice(0, q);
  const query = new URLSearchParams(q === -1 ? '' : raw.slice(q + 1));
  for (const r of routes) {
    const m = r.path.exec(path);
    if (!m) continue;
    const handler = r.methods[req.method ?? ''];
    if (!handler) throw new MethodNotAllowed(Object.keys(r.methods), req.method ?? '?', path);
    return handler(req, res, m[1] ?? '', query);
  }
  throw new ApiError(404, `no such path: ${JSON.stringify(path.slice(0, 80))}; the paths are /jails, /jails/ID, /jails/ID/{logs,exec,stop}, /images, /info and /run`);
}
