import Testing
import GPTQKit
#if canImport(Glibc)
import Glibc
#endif

@Suite struct ChatTemplateTests {
    struct Case: CustomStringConvertible {
        let template: String
        let name: String
        let context: JSON
        let output: String?
        let error: String?
        var description: String { "\(template): \(name), add_generation_prompt=\(context["add_generation_prompt"]?.bool ?? false)" }
    }

    /// Renderings by Python's jinja2 set up as transformers sets it up
    /// (scripts/fixtures/make_chat_template_fixtures.py).
    static let cases: [Case] = {
        let json = try! JSON.read(path: Fixtures.path("chat_templates/expected.json"))
        return json.array!.map {
            Case(template: $0["template"]!.string!, name: $0["name"]!.string!, context: $0["context"]!,
                 output: $0["output"]?.string, error: $0["error"]?.string)
        }
    }()

    static func template(_ file: String) throws -> ChatTemplate {
        let path = Fixtures.path("chat_templates/" + file)
        return try ChatTemplate(try FileIO.readText(path: path), path: path)
    }

    @Test(arguments: cases)
    func rendersAsJinja2Does(_ c: Case) throws {
        let template = try Self.template(c.template)
        if let expected = c.output {
            let rendered = try template.render(context: c.context.object!)
            #expect(rendered == expected)
        } else {
            do {
                _ = try template.render(context: c.context.object!)
                Issue.record("rendered a conversation the template rejects")
            } catch let GPTQError.invalidArgument(message) {
                #expect(message.hasSuffix(": " + c.error!))
            }
        }
    }

    @Test func fixturesCoverEveryTemplateAndBothOutcomes() {
        let templates = Set(Self.cases.map(\.template))
        #expect(templates.count == 9)
        #expect(Self.cases.contains { $0.error != nil } && Self.cases.filter { $0.output != nil }.count > 60)
    }

    @Test func renderMessagesPassesWhatApplyChatTemplatePasses() throws {
        // The SmolLM2 case rendered through the typed API equals the fixture made with
        // transformers' variables (tools/documents None, the special tokens).
        let c = try #require(Self.cases.first { $0.template == "smollm2.jinja" && $0.name == "system and multi-turn" && $0.context["add_generation_prompt"]?.bool == true })
        let config = try TokenizerConfig(json: try JSON.parse(#"""
            {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>", "pad_token": "<|im_end|>"}
            """#), path: "tokenizer_config.json")
        let messages = c.context["messages"]!.array!.map { ChatMessage(role: $0["role"]!.string!, content: $0["content"]!.string!) }
        let rendered = try Self.template("smollm2.jinja").render(messages: messages, addGenerationPrompt: true, specialTokens: config)
        #expect(rendered == c.output)
    }

    @Test func syntaxErrorsNameTheTemplateAndLine() {
        let cases: [(String, String)] = [
            ("{% if x %}\nno end", "missing one of 'elif', 'else', 'endif'"),
            ("a\n\n{{ x + }}", "line 3: expected an expression"),
            ("{% for x in y %}{% endif %}", "line 1: unexpected 'endif'"),
            ("{{ 'open }}", "line 1: unterminated string"),
            ("line\n{% include 'x' %}", "line 2: unsupported statement 'include'"),
            ("{{ x ! y }}", "line 1: unexpected character '!'"),
        ]
        for (source, reason) in cases {
            do {
                _ = try ChatTemplate(source, path: "tokenizer_config.json")
                Issue.record("parsed \(source)")
            } catch let GPTQError.badConfig(field, path, message) {
                #expect(field == "chat_template" && path == "tokenizer_config.json")
                #expect(message.contains(reason), "\(message)")
            } catch {
                Issue.record("\(error)")
            }
        }
    }

    @Test func runtimeErrorsNameTheProblem() throws {
        let cases: [(String, String)] = [
            ("{{ messages[0].content }}", "'messages' is undefined"),
            ("{{ 'a' + 1 }}", "unsupported operand types for +: 'str' and 'int'"),
            ("{{ x|nosuchfilter }}", "unknown filter 'nosuchfilter'"),
            ("{{ 1 // 0 }}", "division or modulo by zero"),
            ("{% set x.y = 1 %}", "only a namespace() takes attributes"),
            ("{{ undefined_thing|tojson }}", "not JSON serializable"),
        ]
        for (source, reason) in cases {
            do {
                _ = try ChatTemplate(source, path: "t.jinja").render(context: [])
                Issue.record("rendered \(source)")
            } catch let GPTQError.badConfig(field, path, message) {
                #expect(field == "chat_template" && path == "t.jinja")
                #expect(message.contains(reason), "\(message)")
            }
        }
    }

    @Test func strftimeNowFormatsTheLocalDate() throws {
        // Llama-3.2's template dates its system prompt with strftime_now("%d %b %Y").
        var now = time(nil)
        var parts = tm()
        localtime_r(&now, &parts)
        let rendered = try ChatTemplate("{{ strftime_now('%Y-%m') }}|{{ strftime_now('%d %b %Y')|length }}").render(context: [])
        let month = parts.tm_mon + 1
        #expect(rendered == "\(parts.tm_year + 1900)-\(month < 10 ? "0" : "")\(month)|11")
    }

    @Test func modelFolderWithoutTemplateIsReported() throws {
        let config = try TokenizerConfig(json: .object([]), path: "/m/tokenizer_config.json")
        #expect(throws: GPTQError.badConfig(field: "chat_template", path: "/m/tokenizer_config.json", reason: "the tokenizer has no chat template")) {
            try ChatTemplate(config: config)
        }
    }
}
