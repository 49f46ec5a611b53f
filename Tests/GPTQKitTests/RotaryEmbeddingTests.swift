import Testing
@testable import GPTQKit

/// Inverse frequencies and angle tables against a float32 transcription of transformers'
/// RoPE code (Tests/Fixtures/rope/make_reference.py).
@Suite struct RotaryEmbeddingTests {
    static let cases: [(name: String, config: String)] = [
        ("default", #""head_dim": 64, "rope_theta": 10000"#),
        ("linear", #""head_dim": 64, "rope_scaling": {"type": "linear", "factor": 4.0}"#),
        ("llama3", #""head_dim": 128, "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}"#),
    ]

    @Test(arguments: cases.map(\.name))
    func matchesTransformers(name: String) throws {
        let fields = Self.cases.first { $0.name == name }!.config
        let text = #"{"model_type": "llama", "hidden_size": 1024, "num_hidden_layers": 1, "num_attention_heads": 8, "vocab_size": 10, "#
            + fields + "}"
        let config = try ModelConfig(json: try JSON.parse(text), path: "config.json")
        guard case let .rotary(spec) = try ModelFamily.llama.architecture(config).positions else { Issue.record("no rotary"); return }
        let rope = RotaryEmbedding(spec)
        let ref = try SafetensorsFile(path: Fixtures.path("rope/reference.safetensors"))
        let expected = try ref.tensor("\(name).inv_freq").floats()
        #expect(rope.inverseFrequencies.count == expected.count)
        for (ours, theirs) in zip(rope.inverseFrequencies, expected) {
            #expect((ours - theirs).magnitude <= 2 * theirs.ulp, "\(name): \(ours) vs \(theirs)")
        }
        let half = expected.count
        let cos = try ref.tensor("\(name).cos").floats(), sin = try ref.tensor("\(name).sin").floats()
        for (row, position) in try ref.tensor("positions").ints().enumerated() {
            let table = rope.tables(start: Int(position), count: 1)
            // Both sides round the float32 angle identically; only cos/sin's last bits may differ.
            for (ours, theirs) in zip(table.cos + table.sin, cos[row * half..<(row + 1) * half] + sin[row * half..<(row + 1) * half]) {
                #expect((ours - theirs).magnitude < 1e-6, "\(name) at position \(position)")
            }
        }
    }
}
