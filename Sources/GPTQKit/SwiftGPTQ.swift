/// The toolkit itself, as checkpoints name their quantizer (`meta.quantizer` of quantize_config.json).
public enum SwiftGPTQ {
    public static let version = "0.1.0"
}
