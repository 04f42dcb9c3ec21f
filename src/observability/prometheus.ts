/**
 * Counters and gauges in the Prometheus text format (0.0.4), with the part of prom-client's API the
 * gateway uses. Hand-written (~100 lines) rather than prom-client: that package pulls in cluster,
 * v8, fs, zlib and @opentelemetry/api, which the Workers bundle must not carry; this runs anywhere.
 */

type Labels<L extends string> = Partial<Record<L, string | number>>;

interface Sample {
  labels: Record<string, string | number>;
  value: number;
}

interface Metric {
  readonly name: string;
  render(): string;
}

interface MetricOptions<L extends string> {
  name: string;
  help: string;
  labelNames?: readonly L[];
  registers?: Registry[];
}

export class Registry {
  readonly contentType = 'text/plain; version=0.0.4; charset=utf-8';
  private readonly metricsByName = new Map<string, Metric>();

  registerMetric(metric: Metric): void {
    if (this.metricsByName.has(metric.name)) {
      throw new Error(`A metric with the name ${metric.name} has already been registered.`);
    }
    this.metricsByName.set(metric.name, metric);
  }

  /** Every metric, in registration order, a blank line apart (what GET /metrics answers). */
  async metrics(): Promise<string> {
    return [...this.metricsByName.values()].map((metric) => metric.render()).join('\n');
  }

  async getSingleMetricAsString(name: string): Promise<string> {
    return this.metricsByName.get(name)?.render().slice(0, -1) ?? '';
  }
}

abstract class LabelledValues<L extends string> implements Metric {
  readonly name: string;
  private readonly help: string;
  private readonly labelled: boolean;
  private readonly samples = new Map<string, Sample>();

  constructor(
    private readonly type: 'counter' | 'gauge',
    options: MetricOptions<L>,
  ) {
    this.name = options.name;
    this.help = options.help;
    this.labelled = (options.labelNames ?? []).length > 0;
    // An unlabelled metric reads 0 before anything happened, as prom-client's does.
    if (!this.labelled) this.samples.set('', { labels: {}, value: 0 });
    for (const registry of options.registers ?? []) registry.registerMetric(this);
  }

  async get(): Promise<{ name: string; type: string; values: Sample[] }> {
    return { name: this.name, type: this.type, values: [...this.samples.values()] };
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${this.type}`];
    for (const sample of this.samples.values()) {
      lines.push(`${this.name}${renderLabels(sample.labels)} ${renderValue(sample.value)}`);
    }
    return `${lines.join('\n')}\n`;
  }

  protected sample(labels: Labels<L>): Sample {
    const clean: Record<string, string | number> = {};
    for (const [name, value] of Object.entries(labels))
      if (value !== undefined) clean[name] = value as string;
    const key = JSON.stringify(clean);
    let sample = this.samples.get(this.labelled ? key : '');
    if (sample === undefined) {
      sample = { labels: clean, value: 0 };
      this.samples.set(key, sample);
    }
    return sample;
  }
}

export class Counter<L extends string = string> extends LabelledValues<L> {
  constructor(options: MetricOptions<L>) {
    super('counter', options);
  }

  inc(labelsOrAmount?: Labels<L> | number, amount?: number): void {
    const labels = typeof labelsOrAmount === 'object' ? labelsOrAmount : {};
    const by = typeof labelsOrAmount === 'number' ? labelsOrAmount : (amount ?? 1);
    if (!Number.isFinite(by) || by < 0) throw new Error(`A counter only goes up by a finite amount: ${by}`);
    this.sample(labels).value += by;
  }
}

export class Gauge<L extends string = string> extends LabelledValues<L> {
  constructor(options: MetricOptions<L>) {
    super('gauge', options);
  }

  set(labelsOrValue: Labels<L> | number, value?: number): void {
    if (typeof labelsOrValue === 'number') this.sample({}).value = labelsOrValue;
    else this.sample(labelsOrValue).value = value ?? 0;
  }
}

function renderLabels(labels: Record<string, string | number>): string {
  const pairs = Object.entries(labels).map(([name, value]) => `${name}="${escapeLabel(String(value))}"`);
  return pairs.length === 0 ? '' : `{${pairs.join(',')}}`;
}

function renderValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Number.POSITIVE_INFINITY) return '+Inf';
  if (value === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(value);
}

const escapeHelp = (text: string) => text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
const escapeLabel = (text: string) => escapeHelp(text).replace(/"/g, '\\"');
