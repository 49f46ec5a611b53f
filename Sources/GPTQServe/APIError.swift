import GPTQKit
import Hummingbird

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the
/// HTTP status OpenAI gives it, so that clients raise their usual exceptions
/// (openai.BadRequestError, NotFoundError, AuthenticationError, ...).
struct APIError: Error, HTTPResponseError {
    let status: HTTPResponse.Status
    let message: String
    let type: String
    let param: String?
    let code: String?

    init(status: HTTPResponse.Status, message: String, type: String = "invalid_request_error", param: String? = nil, code: String? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
    }

    static func badParameter(_ param: String, _ message: String) -> APIError {
        APIError(status: .badRequest, message: message, param: param, code: "invalid_value")
    }

    static func wrongType(_ param: String, expected: String) -> APIError {
        APIError(status: .badRequest, message: "'\(param)' must be \(expected)", param: param, code: "invalid_type")
    }

    static func missing(_ param: String) -> APIError {
        APIError(status: .badRequest, message: "'\(param)' is required", param: param, code: "missing_required_parameter")
    }

    static func malformedJSON(_ reason: String) -> APIError {
        APIError(status: .badRequest, message: "the request body is not valid JSON: \(reason)", code: "invalid_json")
    }

    static func unknownModel(_ name: String) -> APIError {
        APIError(status: .notFound, message: "The model '\(name)' does not exist", param: "model", code: "model_not_found")
    }

    static func contextOverflow(maxModelLen: Int, prompt: Int, completion: Int) -> APIError {
        APIError(status: .badRequest,
                 message: "This model's maximum context length is \(maxModelLen) tokens. However, you requested \(prompt + completion) tokens "
                     + "(\(prompt) in the prompt, \(completion) in the completion). Please reduce the prompt or the completion length.",
                 param: "messages", code: "context_length_exceeded")
    }

    static let overloaded = APIError(status: .serviceUnavailable, message: "The server is overloaded: too many requests are waiting. Retry later.",
                                     type: "server_error", code: "server_overloaded")

    static let badAPIKey = APIError(status: .unauthorized, message: "Incorrect or missing API key: send 'Authorization: Bearer KEY'.",
                                    code: "invalid_api_key")

    /// The shape of an error Hummingbird raised itself (no such route, body too large).
    init(_ error: HTTPError) {
        switch error.status {
        case .notFound: self.init(status: .notFound, message: "no such route", code: "not_found")
        case .contentTooLarge: self.init(status: .contentTooLarge, message: "the request body is too large", code: "body_too_large")
        default: self.init(status: error.status, message: error.body ?? error.status.reasonPhrase)
        }
    }

    var json: JSON {
        .object([("error", .object([
            ("message", .string(message)),
            ("type", .string(type)),
            ("param", param.map(JSON.string) ?? .null),
            ("code", code.map(JSON.string) ?? .null),
        ]))])
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        jsonResponse(json, status: status)
    }
}

func jsonResponse(_ json: JSON, status: HTTPResponse.Status = .ok) -> Response {
    Response(status: status, headers: [.contentType: "application/json"],
             body: ResponseBody(byteBuffer: ByteBuffer(string: json.serialized(indent: 0))))
}
