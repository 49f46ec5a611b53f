import Testing
import GPTQKit

@Suite struct GenerationConfigTests {
    let dir = "/tmp/gptq-genconfig-tests-\(UInt32.random(in: 0...UInt32.max))"

    @Test func readsTheFixtureAndFillsTransformersDefaults() throws {
        let config = try GenerationConfig(folder: Fixtures.path("arch/llama"))
        #expect(config.bosTokenId == 1 && config.eosTokenIds == [2] && config.padTokenId == nil)
        #expect(!config.doSample && config.temperature == 1 && config.topK == 50 && config.topP == 1)
        #expect(config.sampling == SamplingParameters(temperature: 0, topK: 50, topP: 1, repetitionPenalty: 1))
    }

    @Test func readsSamplingFieldsAndEosLists() throws {
        let json = try JSON.parse(#"""
        {"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "do_sample": true,
         "temperature": 0.6, "top_p": 0.9, "top_k": 0, "repetition_penalty": 1.1, "max_new_tokens": 256, "pad_token_id": null}
        """#)
        let config = try GenerationConfig(json: json, path: "g.json")
        #expect(config.eosTokenIds == [128001, 128008, 128009] && config.maxNewTokens == 256 && config.padTokenId == nil)
        #expect(config.sampling == SamplingParameters(temperature: 0.6, topK: 0, topP: 0.9, repetitionPenalty: 1.1))
    }

    @Test func aFolderWithoutTheFileGetsDefaults() throws {
        try FileIO.makeDirectory(dir)
        #expect(try GenerationConfig(folder: dir) == GenerationConfig())
    }

    @Test func malformedFieldsAreNamed() throws {
        let cases: [(String, String)] = [
            (#"{"eos_token_id": "</s>"}"#, "eos_token_id"),
            (#"{"eos_token_id": [2, -1]}"#, "eos_token_id"),
            (#"{"do_sample": "yes"}"#, "do_sample"),
            (#"{"temperature": -0.5}"#, "temperature"),
            (#"{"top_p": 1.5}"#, "top_p"),
            (#"{"top_k": 2.5}"#, "top_k"),
        ]
        for (text, field) in cases {
            do {
                _ = try GenerationConfig(json: try JSON.parse(text), path: "g.json")
                Issue.record("accepted \(text)")
            } catch let GPTQError.badConfig(f, path, _) {
                #expect(f == field && path == "g.json")
            }
        }
    }
}

@Suite struct TokenizerConfigTests {
    let dir = "/tmp/gptq-tokconfig-tests-\(UInt32.random(in: 0...UInt32.max))"

    @Test func readsStringAndAddedTokenObjects() throws {
        let json = try JSON.parse(#"""
        {"add_bos_token": true, "add_eos_token": false,
         "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": false},
         "eos_token": "</s>", "unk_token": {"content": "<unk>"}, "pad_token": null,
         "chat_template": "{{ bos_token }}", "model_max_length": 1000000000000000019884624838656}
        """#)
        let config = try TokenizerConfig(json: json, path: "t.json")
        #expect(config.bosToken == "<s>" && config.eosToken == "</s>" && config.unkToken == "<unk>" && config.padToken == nil)
        #expect(config.addBosToken == true && config.addEosToken == false)
        #expect(config.chatTemplate == "{{ bos_token }}" && config.modelMaxLength == nil)
    }

    @Test func picksTheDefaultOfNamedTemplates() throws {
        let json = try JSON.parse(#"""
        {"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}], "model_max_length": 8192}
        """#)
        let config = try TokenizerConfig(json: json, path: "t.json")
        #expect(config.chatTemplate == "D" && config.modelMaxLength == 8192)
        #expect(throws: GPTQError.badConfig(field: "chat_template", path: "t.json", reason: "no template named 'default' among [\"rag\", \"tool_use\"]")) {
            try TokenizerConfig(json: try JSON.parse(#"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "rag", "template": "R"}]}"#), path: "t.json")
        }
    }

    @Test func readsChatTemplateJinjaBesideTheConfig() throws {
        try FileIO.makeDirectory(dir)
        try FileIO.writeAtomically(path: dir + "/tokenizer_config.json", text: #"{"eos_token": "<|im_end|>"}"#)
        try FileIO.writeAtomically(path: dir + "/chat_template.jinja", text: "{{ messages[0].content }}")
        let config = try TokenizerConfig(folder: dir)
        #expect(config.eosToken == "<|im_end|>" && config.chatTemplate == "{{ messages[0].content }}")
    }

    @Test func malformedFieldsAreNamed() throws {
        let cases: [(String, String)] = [
            (#"{"bos_token": 1}"#, "bos_token"),
            (#"{"eos_token": {"id": 2}}"#, "eos_token"),
            (#"{"add_bos_token": "true"}"#, "add_bos_token"),
            (#"{"chat_template": 3}"#, "chat_template"),
            (#"{"chat_template": [{"name": "default"}]}"#, "chat_template"),
            (#"{"model_max_length": "big"}"#, "model_max_length"),
        ]
        for (text, field) in cases {
            do {
                _ = try TokenizerConfig(json: try JSON.parse(text), path: "t.json")
                Issue.record("accepted \(text)")
            } catch let GPTQError.badConfig(f, path, _) {
                #expect(f == field && path == "t.json")
            }
        }
    }
}
