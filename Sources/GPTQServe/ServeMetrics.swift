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
    let promptTokens: Counter
    let generationTokens: Counter
    /// Generated tokens per second over the last second the server was busy.
    let generationTokensPerSecond: Gauge
    let cancelledSequences: Counter
    let timeToFirstToken: DurationHistogram
    let interTokenLatency: DurationHistogram
    let stepDuration: DurationHistogram

    init() {
        runningSequences = registry.makeGauge(name: "gptq_sequences_running", help: "Sequences in the running batch.")
        waitingSequences = registry.makeGauge(name: "gptq_sequences_waiting", help: "Sequences queued for a batch slot.")
        kvSlotsInUse = registry.makeGauge(name: "gptq_kv_slots_in_use", help: "KV cache slots holding a sequence.")
        kvSlotsTotal = registry.makeGauge(name: "gptq_kv_slots_total", help: "KV cache slots (the most sequences in a batch).")
        kvTokensInUse = registry.makeGauge(name: "gptq_kv_tokens_in_use", help: "Token positions cached over all slots in use.")
        promptTokens = registry.makeCounter(name: "gptq_prompt_tokens_total", help: "Prompt tokens prefilled.")
        generationTokens = registry.makeCounter(name: "gptq_generation_tokens_total", help: "Tokens generated.")
        generationTokensPerSecond = registry.makeGauge(
            name: "gptq_generation_tokens_per_second", help: "Tokens generated per second over the last busy second.")
        cancelledSequences = registry.makeCounter(name: "gptq_sequences_cancelled_total", help: "Sequences cancelled before they finished (client gone).")
        let latencyBuckets: [Duration] = [.milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
                                          .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10)]
        timeToFirstToken = registry.makeDurationHistogram(
            name: "gptq_time_to_first_token_seconds", buckets: latencyBuckets, help: "From a request's arrival to its first generated token.")
        interTokenLatency = registry.makeDurationHistogram(
            name: "gptq_inter_token_latency_seconds", buckets: latencyBuckets, help: "Between consecutive generated tokens of a sequence.")
        stepDuration = registry.makeDurationHistogram(
            name: "gptq_step_seconds", buckets: latencyBuckets, help: "One scheduler step: a batched forward and sampling.")
    }

    /// Requests answered, by route and HTTP status.
    func countRequest(route: String, status: Int) {
        registry.makeCounter(name: "gptq_requests_total", labels: [("route", route), ("status", String(status))],
                             help: "HTTP requests answered.").increment()
    }
}
