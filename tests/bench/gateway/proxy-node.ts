/**
 * Target B of bench:gateway: a bare node:http pass-through proxy with a keep-alive agent, the floor
 * any Node proxy pays (parse the request, forward it, pipe the answer back). UPSTREAM_URL is the
 * upstream's origin; prints `{"port":n}` once listening.
 */
import { createServer } from 'node:http';
import { forward, listen } from './proxy-common.js';

listen(
  createServer((req, res) => {
    forward(req, res, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
  }),
);
