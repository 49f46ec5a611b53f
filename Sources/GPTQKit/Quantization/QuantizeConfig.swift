/// How a GPTQ checkpoint stores its zero points (see docs/FORMAT.md).
public enum CheckpointFormat: String, Sendable, CaseIterable {
    /// AutoGPTQ's original layout: qzeros holds zero − 1 (so a zero of 0 cannot be stored).
    case gptq = "gptq"
    /// GPTQModel's layout: qzeros holds the zero itself.
    case gptqV2 = "gptq_v2"
}

/// AutoGPTQ's Quantizer MSE option: shrink the min/max range over a grid and keep the
/// candidate with the smallest ‖q(x) − x‖ₚ (p = `norm`).
public struct MSESearch: Sendable, Equatable {
    public var norm: Double = 2.4
    public var grid: Int = 100
    public var maxShrink: Double = 0.8

    public init(norm: Double = 2.4, grid: Int = 100, maxShrink: Double = 0.8) {
        self.norm = norm
        self.grid = grid
        self.maxShrink = maxShrink
    }
}

/// The settings of a GPTQ quantization, as AutoGPTQ's BaseQuantizeConfig and its
/// quantize_config.json (also found as config.json's `quantization_config`).
public struct QuantizeConfig: Sendable, Equatable {
    public static let supportedBits = [2, 3, 4, 8]

    public var bits: Int
    /// Columns per group of scales and zeros; -1: one group for the whole row.
    public var groupSize: Int
    /// Act-order: quantize columns by decreasing Hessian diagonal.
    public var descAct: Bool
    /// Group parameters computed from the unquantized weight before the GPTQ loop.
    public var staticGroups: Bool
    public var sym: Bool
    /// Added to the Hessian diagonal, as a fraction of its mean.
    public var dampPercent: Double
    /// Quantize the linears of a block in sequence (q/k/v → o → up/gate → down).
    public var trueSequential: Bool
    public var mse: MSESearch?
    public var checkpointFormat: CheckpointFormat
    /// The tools that wrote the checkpoint, as GPTQModel's `meta.quantizer` lists them
    /// ("name:version"); empty where the file has no `meta` (AutoGPTQ).
    public var quantizer: [String]
    /// GPTQModel's `lm_head`: the LM head is quantized too, from the final norm's outputs.
    public var lmHead: Bool
    /// GPTQModel's `dynamic` (read, never written here): per-module overrides, in file order.
    public var dynamic: [DynamicOverride]

    /// The quantizer entry of checkpoints written here.
    public static let swiftGPTQQuantizer = "swift-gptq:\(SwiftGPTQ.version)"

    /// `checkpointFormat` nil: gptq (v1) for symmetric quantization, which every loader
    /// reads; gptq_v2 for asymmetric, whose zeros of 0 v1 cannot hold (docs/FORMAT.md).
    public init(bits: Int = 4, groupSize: Int = 128, descAct: Bool = false, staticGroups: Bool = false, sym: Bool = true,
                dampPercent: Double = 0.01, trueSequential: Bool = true, mse: MSESearch? = nil,
                checkpointFormat: CheckpointFormat? = nil, quantizer: [String] = [QuantizeConfig.swiftGPTQQuantizer],
                lmHead: Bool = false, dynamic: [DynamicOverride] = []) {
        self.bits = bits
        self.groupSize = groupSize
        self.descAct = descAct
        self.staticGroups = staticGroups
        self.sym = sym
        self.dampPercent = dampPercent
        self.trueSequential = trueSequential
        self.mse = mse
        self.checkpointFormat = checkpointFormat ?? (sym ? .gptq : .gptqV2)
        self.quantizer = quantizer
        self.lmHead = lmHead
        self.dynamic = dynamic
    }

    /// Bits and group size of module `name` (its full stored name): the first `dynamic`
    /// override whose pattern matches it, else the file's own. GPTQModel saves a quantized
    /// `lm_head` this way (8-bit, group 32 unless told otherwise) beside 4-bit layers.
    public func packing(ofModule name: String) -> (bits: Int, groupSize: Int) {
        guard let rule = dynamic.first(where: { $0.matches(name) }) else { return (bits, groupSize) }
        return (rule.bits ?? bits, rule.groupSize ?? groupSize)
    }

    /// Whether v1 zeros were packed GPTQModel's way (its `meta.quantizer` gptqmodel ≥ 0.9.0,
    /// the version that introduced it), whose borrows look like AutoGPTQ's overflow
    /// (`PackedLinear.autoGPTQOverflowWords`).
    public var packsV1LikeGPTQModel: Bool {
        quantizer.contains { entry in
            let parts = entry.lowercased().split(separator: ":", maxSplits: 1)
            guard parts.count == 2, parts[0] == "gptqmodel" else { return false }
            let version = parts[1].split(separator: ".").map { Int($0.prefix { $0.isNumber }) ?? 0 }
            return version.lexicographicallyPrecedes([0, 9, 0]) == false
        }
    }

    /// Largest quantized value, 2^bits − 1.
    public var maxq: Int { (1 << bits) - 1 }

    /// Checks the values a quantization run depends on. A group size need not divide
    /// in_features: as in AutoGPTQ the last group is partial (SmolLM2's 576 columns make
    /// 4½ groups of 128), with ⌈in_features / group_size⌉ scales.
    public func validate() throws {
        guard Self.supportedBits.contains(bits) else {
            throw GPTQError.invalidArgument("bits \(bits) is not supported (use 2, 3, 4 or 8)")
        }
        guard groupSize == -1 || groupSize > 0 else {
            throw GPTQError.invalidArgument("group size \(groupSize) must be positive or -1 (one group per row)")
        }
        guard dampPercent > 0, dampPercent < 1 else {
            throw GPTQError.invalidArgument("damp percent \(dampPercent) must be in (0, 1)")
        }
        if let mse, !(mse.norm > 0 && mse.grid > 0 && mse.maxShrink > 0 && mse.maxShrink <= 1) {
            throw GPTQError.invalidArgument("mse search needs norm > 0, grid > 0 and 0 < maxshrink ≤ 1")
        }
    }

    /// One line for logs: `4-bit, group 128, desc_act off, sym, format gptq`.
    public var summary: String {
        "\(bits)-bit, " + (groupSize == -1 ? "one group per row" : "group \(groupSize)") + ", desc_act \(descAct ? "on" : "off")"
            + (staticGroups ? ", static groups" : "") + ", \(sym ? "sym" : "asym"), format \(checkpointFormat.rawValue)"
    }

    // MARK: quantize_config.json

    /// Reads a quantize_config.json object (or config.json's `quantization_config`);
    /// `path` names the file in errors. Missing optional fields take AutoGPTQ's defaults.
    public init(json: JSON, path: String) throws {
        func field(_ name: String) -> JSON? { json[name].flatMap { $0.isNull ? nil : $0 } }
        func bool(_ name: String, _ fallback: Bool) throws -> Bool {
            guard let v = field(name) else { return fallback }
            guard let b = v.bool else { throw GPTQError.badConfig(field: name, path: path, reason: "expected true or false") }
            return b
        }
        guard json.object != nil else { throw GPTQError.badConfig(field: "quantization_config", path: path, reason: "not a JSON object") }
        if let method = field("quant_method") {
            guard method.string?.lowercased() == "gptq" else {
                throw GPTQError.badConfig(field: "quant_method", path: path, reason: "\(method.serialized(indent: 0)) is not gptq")
            }
        }
        guard let bitsValue = field("bits") else { throw GPTQError.badConfig(field: "bits", path: path, reason: "missing") }
        guard let bits = bitsValue.int, Self.supportedBits.contains(bits) else {
            throw GPTQError.badConfig(field: "bits", path: path, reason: "\(bitsValue.serialized(indent: 0)) is not one of 2, 3, 4, 8")
        }
        let groupSize: Int
        if let v = field("group_size") {
            guard let g = v.int, g == -1 || g > 0 else {
                throw GPTQError.badConfig(field: "group_size", path: path, reason: "\(v.serialized(indent: 0)) is neither -1 nor a positive integer")
            }
            groupSize = g
        } else { groupSize = -1 }
        var damp = 0.01
        if let v = field("damp_percent") {
            guard let d = v.double, d > 0, d < 1 else {
                throw GPTQError.badConfig(field: "damp_percent", path: path, reason: "\(v.serialized(indent: 0)) is not a number in (0, 1)")
            }
            damp = d
        }
        var format = CheckpointFormat.gptq
        if let v = field("checkpoint_format") {
            guard let name = v.string, let f = CheckpointFormat(rawValue: name) else {
                throw GPTQError.badConfig(field: "checkpoint_format", path: path, reason: "\(v.serialized(indent: 0)) is not gptq or gptq_v2")
            }
            format = f
        }
        var quantizer: [String] = []
        if let meta = field("meta") {
            guard meta.object != nil else { throw GPTQError.badConfig(field: "meta", path: path, reason: "not a JSON object") }
            if let v = meta["quantizer"], !v.isNull {
                guard let entries = v.string.map({ [$0] }) ?? v.array?.compactMap(\.string), entries.count == (v.array?.count ?? 1) else {
                    throw GPTQError.badConfig(field: "meta.quantizer", path: path, reason: "\(v.serialized(indent: 0)) is neither a string nor a list of strings")
                }
                quantizer = entries
            }
        }
        var mse: MSESearch?
        if let v = field("mse") {
            guard let norm = v.double, norm >= 0 else { throw GPTQError.badConfig(field: "mse", path: path, reason: "expected a non-negative norm") }
            if norm > 0 { mse = MSESearch(norm: norm) }
        }
        var dynamic: [DynamicOverride] = []
        if let v = field("dynamic") {
            guard let rules = v.object else { throw GPTQError.badConfig(field: "dynamic", path: path, reason: "not a JSON object") }
            dynamic = try rules.map { try DynamicOverride(key: $0.0, overrides: $0.1, path: path) }
        }
        self.init(bits: bits, groupSize: groupSize, descAct: try bool("desc_act", false), staticGroups: try bool("static_groups", false),
                  sym: try bool("sym", true), dampPercent: damp, trueSequential: try bool("true_sequential", true), mse: mse,
                  checkpointFormat: format, quantizer: quantizer, lmHead: try bool("lm_head", false), dynamic: dynamic)
    }

    /// Reads a quantize_config.json file.
    public init(path: String) throws {
        try self.init(json: try JSON.read(path: path), path: path)
    }

    /// The quantize_config.json object AutoGPTQ writes (the same object goes into
    /// config.json as `quantization_config`), with GPTQModel's `meta` block: who quantized
    /// and the settings that do not affect inference. `mse` is GPTQModel's key: written at the
    /// top level only when used, as AutoGPTQ's loaders do not know it. GPTQModel's `uri` and
    /// `damp_auto_increment` are left out: there is no public address, and damping here grows
    /// tenfold after a failed factorisation rather than by a fixed increment.
    public var json: JSON {
        var pairs: [(String, JSON)] = [
            ("bits", .number(Double(bits))),
            ("group_size", .number(Double(groupSize))),
            ("damp_percent", .number(dampPercent)),
            ("desc_act", .bool(descAct)),
            ("static_groups", .bool(staticGroups)),
            ("sym", .bool(sym)),
            ("true_sequential", .bool(trueSequential)),
            ("model_name_or_path", .null),
            ("model_file_base_name", .string("model")),
            ("quant_method", .string("gptq")),
            ("checkpoint_format", .string(checkpointFormat.rawValue)),
        ]
        if let mse { pairs.append(("mse", .number(mse.norm))) }
        if lmHead { pairs.append(("lm_head", .bool(true))) }
        pairs.append(("meta", .object([
            ("quantizer", .array(quantizer.map { .string($0) })),
            ("damp_percent", .number(dampPercent)),
            ("static_groups", .bool(staticGroups)),
            ("true_sequential", .bool(trueSequential)),
            ("mse", .number(mse?.norm ?? 0)),
            ("act_group_aware", .bool(false)),
        ])))
        return .object(pairs)
    }
}

/// One entry of GPTQModel's `dynamic`: `"pattern": {"bits": 8, "group_size": 32, ...}`. The
/// pattern is a regular expression matched at the start of a module's full name (Python's
/// `re.match`, as GPTQModel does), after an optional `+:` or `-:` prefix. A `-:` rule's
/// modules were left unquantized (stored with `.weight`, so they load as float anyway); it
/// still takes those modules before any later rule. Only the overrides that change how a
/// module is stored are kept.
public struct DynamicOverride: Sendable, Equatable {
    public let pattern: String
    public let bits: Int?
    public let groupSize: Int?

    init(key: String, overrides: JSON, path: String) throws {
        pattern = key.hasPrefix("-:") || key.hasPrefix("+:") ? String(key.dropFirst(2)) : key
        let field = "dynamic.\(key)"
        // A config file is untrusted: a pattern that could backtrack for exponential time on a module name is refused.
        if let hazard = RegexMatcher.backtrackingHazard(in: pattern) {
            throw GPTQError.badConfig(field: field, path: path, reason: "the pattern \(hazard) can backtrack for exponential time; not supported")
        }
        do { _ = try Regex(pattern) } catch {
            throw GPTQError.badConfig(field: field, path: path, reason: "the pattern is not a regular expression: \(error)")
        }
        guard overrides.object != nil else { throw GPTQError.badConfig(field: field, path: path, reason: "not a JSON object") }
        if let v = overrides["bits"], !v.isNull {
            guard let b = v.int, QuantizeConfig.supportedBits.contains(b) else {
                throw GPTQError.badConfig(field: field + ".bits", path: path, reason: "\(v.serialized(indent: 0)) is not one of 2, 3, 4, 8")
            }
            bits = b
        } else { bits = nil }
        if let v = overrides["group_size"], !v.isNull {
            guard let g = v.int, g == -1 || g > 0 else {
                throw GPTQError.badConfig(field: field + ".group_size", path: path, reason: "\(v.serialized(indent: 0)) is neither -1 nor a positive integer")
            }
            groupSize = g
        } else { groupSize = nil }
    }

    /// Whether the override applies to module `name`: a match from its first character on.
    public func matches(_ name: String) -> Bool {
        // The pattern compiled when the file was read, so it compiles here too.
        (try? name.prefixMatch(of: Regex(pattern))) != nil
    }
}
