import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness } from '../support/harness.js';

describe('GET /metrics without METRICS_TOKEN', () => {
  let harness: Harness;
  beforeAll(async () => {
    harness = await createHarness();
  });
  afterAll(() => harness.close());

  it('is open and serves Prometheus text with the engine counters', async () => {
    const response = await harness.request('/metrics');
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('text/plain');
    const text = await response.text();
    expect(text).toContain('# TYPE spicegate_accounting_drift_micro_total counter');
    expect(text).toContain('# TYPE spicegate_store_unavailable_total counter');
  });
});

describe('GET /metrics with METRICS_TOKEN', () => {
  const token = 'metrics-secret-0123456789';
  let harness: Harness;
  beforeAll(async () => {
    harness = await createHarness({ config: { metricsToken: token } });
  });
  afterAll(() => harness.close());

  it.each([
    ['no token', {}],
    ['a wrong token', { authorization: 'Bearer metrics-secret-012345678X' }],
  ])('refuses %s with 401 in the error shape', async (_, headers) => {
    const response = await harness.request('/metrics', { headers });
    expect(response.status).toBe(401);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('unauthorized');
  });

  it('serves the metrics to the right bearer token', async () => {
    const response = await harness.request('/metrics', { headers: { authorization: `Bearer ${token}` } });
    expect(response.status).toBe(200);
    expect(await response.text()).toContain('spicegate_overspend_events_total');
  });
});
