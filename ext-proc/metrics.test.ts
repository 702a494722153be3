import { describe, expect, it } from 'vitest';
import { Histogram, Registry } from 'prom-client';
import { HANDLING_BUCKETS, LabeledHistogram, createMetrics } from './metrics.ts';

describe('LabeledHistogram', () => {
  it("prints exactly what prom-client's Histogram prints for the same observations", async () => {
    const theirs = new Registry();
    const reference = new Histogram({ name: 'h_seconds', help: 'handling', labelNames: ['message'], buckets: HANDLING_BUCKETS, registers: [theirs] });
    const ours = new Registry();
    const histogram = new LabeledHistogram('h_seconds', 'handling', 'message', HANDLING_BUCKETS);
    ours.registerMetric(histogram as unknown as Histogram);
    // Below, on and above bounds, past the last bound, and zero; two label values.
    const observations: [string, number][] = [
      ['request_body', 0.000004], ['request_body', 0.00001], ['request_body', 0.0000101], ['request_headers', 0.0003],
      ['request_body', 0.2], ['request_body', 0.75], ['request_headers', 0], ['request_body', 0.0049],
    ];
    for (const [message, seconds] of observations) {
      reference.observe({ message }, seconds);
      histogram.observe(message, seconds);
    }
    expect(await ours.metrics()).toBe(await theirs.metrics());
    histogram.reset();
    reference.reset();
    expect(await ours.metrics()).toBe(await theirs.metrics());
  });
});

describe('the hasher metrics', () => {
  const value = (text: string, series: string) => Number(text.split('\n').find((line) => line.startsWith(`${series} `))?.split(' ')[1]);

  it('counts streams, answers and handling time, and prints the same totals on every scrape', async () => {
    let open = 3;
    const metrics = createMetrics(() => open);
    for (let i = 0; i < 3; i++) metrics.streamStarted();
    open--;
    metrics.answered('headers-answered', 'request_headers', 0.00002);
    metrics.answered('hashed', 'request_body', 0.00004);
    metrics.answered('hashed', 'request_body', 0.00006);
    for (const scrape of [1, 2]) {
      const text = await metrics.registry.metrics();
      expect(value(text, 'ext_proc_streams_total'), `scrape ${scrape}`).toBe(3);
      expect(value(text, 'ext_proc_streams_open')).toBe(2);
      expect(value(text, 'ext_proc_messages_total{outcome="hashed"}')).toBe(2);
      expect(value(text, 'ext_proc_messages_total{outcome="headers-answered"}')).toBe(1);
      // Every outcome and error reason is there from the start, at zero.
      expect(value(text, 'ext_proc_messages_total{outcome="no-body"}')).toBe(0);
      expect(value(text, 'ext_proc_stream_errors_total{reason="out-of-order"}')).toBe(0);
      expect(value(text, 'ext_proc_message_handling_seconds_count{message="request_body"}')).toBe(2);
      expect(value(text, 'ext_proc_message_handling_seconds_bucket{le="0.00005",message="request_body"}')).toBe(1);
      expect(value(text, 'ext_proc_message_handling_seconds_sum{message="request_body"}')).toBeCloseTo(0.0001, 12);
      expect(text).toMatch(/^process_cpu_user_seconds_total /m);
    }
  });
});
