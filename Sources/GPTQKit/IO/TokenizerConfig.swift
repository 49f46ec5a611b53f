/// The fields of tokenizer_config.json that generation needs: the special tokens a chat
/// template refers to, whether encoding adds BOS/EOS, and the chat template itself.
public struct TokenizerConfig: Sendable {
    public let path: String
    public var bosToken: String?
    public var eosToken: String?
    public var padToken: String?
    public var unkToken: String?
    public var addBosToken: Bool?
    public var addEosToken: Bool?
    /// The template `apply_chat_template` uses: the string, or the entry named "default" of a
    /// list of named templates, or else the folder's chat_template.jinja (newer transformers
    /// save it there).
    public var chatTemplate: String?
    /// nil where the file leaves it out or gives transformers' "no limit" sentinel (1e30).
    public var modelMaxLength: Int?

    /// Reads `tokenizer_config.json` (and `chat_template.jinja` when the config has no
    /// template) from a model folder; a folder with neither gets an empty config.
    public init(folder: String) throws {
        let path = FileIO.join(folder, "tokenizer_config.json")
        if FileIO.exists(path) {
            try self.init(json: try JSON.read(path: path), path: path)
        } else {
            try self.init(json: .object([]), path: path)
        }
        let templatePath = FileIO.join(folder, "chat_template.jinja")
        if chatTemplate == nil, FileIO.exists(templatePath) {
            chatTemplate = try FileIO.readText(path: templatePath)
        }
    }

    public init(json: JSON, path: String) throws {
        self.path = path
        guard json.object != nil else { throw GPTQError.badConfig(field: "(root)", path: path, reason: "expected an object") }
        let fields = ConfigFields(json: json, path: path)
        func token(_ name: String) throws -> String? {
            guard let v = fields.value(name) else { return nil }
            if let s = v.string { return s }
            // An AddedToken object: {"__type": "AddedToken", "content": "<s>", ...}.
            if let s = v["content"]?.string { return s }
            throw fields.fail(name, "expected a string or an object with a string 'content'")
        }
        bosToken = try token("bos_token")
        eosToken = try token("eos_token")
        padToken = try token("pad_token")
        unkToken = try token("unk_token")
        addBosToken = try fields.bool("add_bos_token")
        addEosToken = try fields.bool("add_eos_token")

        if let template = fields.value("chat_template") {
            if let s = template.string {
                chatTemplate = s
            } else if let list = template.array {
                var named: [String: String] = [:]
                for entry in list {
                    guard let name = entry["name"]?.string, let body = entry["template"]?.string else {
                        throw fields.fail("chat_template", "expected a list of {name, template} objects")
                    }
                    named[name] = body
                }
                guard let chosen = named["default"] else {
                    throw fields.fail("chat_template", "no template named 'default' among \(named.keys.sorted())")
                }
                chatTemplate = chosen
            } else {
                throw fields.fail("chat_template", "expected a string or a list of {name, template} objects")
            }
        }

        if let v = fields.value("model_max_length") {
            guard let d = v.double, d >= 1 else { throw fields.fail("model_max_length", "expected a positive number") }
            modelMaxLength = d < 1e15 ? Int(d) : nil
        }
    }
}
