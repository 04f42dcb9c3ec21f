import { describe, expect, it } from 'vitest';
import { Counter, Gauge, Registry } from '../../src/observability/prometheus.js';

describe('the Prometheus exposition (src/observability/prometheus.ts)', () => {
  it('renders counters and gauges in the text format, labels and help escaped, as prom-client did', async () => {
    const registry = new Registry();
    const jobs = new Counter({
      name: 'a_total',
      help: 'A \\ help\nline',
      labelNames: ['job', 'outcome'],
      registers: [registry],
    });
    const plain = new Counter({ name: 'b_total', help: 'B', registers: [registry] });
    const gauge = new Gauge({ name: 'g', help: 'G', registers: [registry] });
    new Counter({ name: 'unused_total', help: 'U', labelNames: ['x'], registers: [registry] });
    jobs.inc({ job: 'x"y', outcome: 'ok' });
    jobs.inc({ job: 'x"y', outcome: 'ok' }, 2);
    jobs.inc({ job: 'z', outcome: 'failed' });
    plain.inc(5);
    plain.inc();
    gauge.set(1.5);
    // The text prom-client 15.1.3 rendered for the same calls (an unlabelled metric reads 0 at first).
    expect(await registry.metrics()).toBe(
      '# HELP a_total A \\\\ help\\nline\n# TYPE a_total counter\n' +
        'a_total{job="x\\"y",outcome="ok"} 3\na_total{job="z",outcome="failed"} 1\n\n' +
        '# HELP b_total B\n# TYPE b_total counter\nb_total 6\n\n' +
        '# HELP g G\n# TYPE g gauge\ng 1.5\n\n' +
        '# HELP unused_total U\n# TYPE unused_total counter\n',
    );
    expect((await jobs.get()).values).toEqual([
      { labels: { job: 'x"y', outcome: 'ok' }, value: 3 },
      { labels: { job: 'z', outcome: 'failed' }, value: 1 },
    ]);
    expect(await registry.getSingleMetricAsString('b_total')).toBe(
      '# HELP b_total B\n# TYPE b_total counter\nb_total 6',
    );
    expect(registry.contentType).toBe('text/plain; version=0.0.4; charset=utf-8');
  });

  it('refuses a counter going down and a name registered twice', () => {
    const registry = new Registry();
    const counter = new Counter({ name: 'c_total', help: 'C', registers: [registry] });
    expect(() => counter.inc(-1)).toThrow();
    expect(() => new Counter({ name: 'c_total', help: 'again', registers: [registry] })).toThrow();
  });
});
