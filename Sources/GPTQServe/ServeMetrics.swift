import Prometheus

/// The server's Prometheus metrics, in a registry of its own (not the global MetricsSystem),
/// so that several servers in one process (the tests) keep separate counts.
final class ServeMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()

    let runningSequences: Gauge
    let waitingSequences: Gauge
    /// Batch slots (each a sequence's KV cache) holding a sequence, of `kvSlotsTotal`.
    let kvSlotsInUse: Gauge
    let kvSlotsTotal: Gauge
    /// Positions cached over every slot in use.
    let kvTokensInUse: Gauge
    let kvBlocksInUse: Gauge
    let promptTokens: Counter
    let generationTokens: Counter
    /// Generated tokens per second over the last second the server was busy.
    let generationTokensPerSecond: Gauge
    let cancelledSequences: Counter
    let timeToFirstToken: DurationHistogram
    let interTokenLatency: DurationHistogram
    let stepDuration: DurationHistogram

    init() {
        runningSequences = registry.makeGauge(descriptor: metric("sequences_running", "Sequences in the running batch."))
        waitingSequences = registry.makeGauge(descriptor: metric("sequences_waiting", "Sequences queued for a batch slot."))
        kvSlotsInUse = registry.makeGauge(descriptor: metric("kv_slots_in_use", "KV cache slots holding a sequence."))
        kvSlotsTotal = registry.makeGauge(descriptor: metric("kv_slots_total", "KV cache slots (the most sequences in a batch)."))
        kvTokensInUse = registry.makeGauge(descriptor: metric("kv_tokens_in_use", "Token positions cached over all slots in use."))
        kvBlocksInUse = registry.makeGauge(descriptor: metric("kv_blocks_in_use", "Paged KV cache blocks held by sequences (GPU)."))
        promptTokens = registry.makeCounter(descriptor: metric("prompt_tokens_total", "Prompt tokens prefilled."))
        generationTokens = registry.makeCounter(descriptor: metric("generation_tokens_total", "Tokens generated."))
        generationTokensPerSecond = registry.makeGauge(descriptor: metric("generation_tokens_per_second", "Tokens generated per second over the last busy second."))
        cancelledSequences = registry.makeCounter(descriptor: metric("sequences_cancelled_total", "Sequences cancelled before they finished (client gone)."))
        let latencyBuckets: [Duration] = [.milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
                                          .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10)]
        timeToFirstToken = registry.makeDurationHistogram(descriptor: metric("time_to_first_token_seconds", "From a request's arrival to its first generated token."), buckets: latencyBuckets)
        interTokenLatency = registry.makeDurationHistogram(descriptor: metric("inter_token_latency_seconds", "Between consecutive generated tokens of a sequence."), buckets: latencyBuckets)
        stepDuration = registry.makeDurationHistogram(descriptor: metric("step_seconds", "One scheduler step: a batched forward and sampling."), buckets: latencyBuckets)
    }

    /// Requests answered, by route and HTTP status.
    func countRequest(route: String, status: Int) {
        registry.makeCounter(descriptor: metric("requests_total", "HTTP requests answered."),
                             labels: [("route", route), ("status", String(status))]).increment()
    }
}

/// A metric named gptq_<name> (the unit, where there is one, is part of `name`).
private func metric(_ name: String, _ help: String) -> MetricNameDescriptor {
    MetricNameDescriptor(namespace: "gptq", metricName: name, unitName: "", helpText: help)
}
