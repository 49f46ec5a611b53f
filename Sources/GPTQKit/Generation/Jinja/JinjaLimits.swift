/// The bounds a template runs within. A chat template comes from a downloaded
/// tokenizer_config.json: it is untrusted code, and must not run forever, recurse the stack
/// away or allocate without end. Each limit lies far above what real templates need (the
/// fixtures' templates take a few thousand steps and nest less than 15 deep), and each
/// breach is an error naming the limit.
enum JinjaLimits {
    /// Nodes run plus expressions evaluated in one render.
    static let steps = 2_000_000
    /// Nesting of blocks and of expressions in the source.
    static let sourceNesting = 100
    /// Nesting of evaluation while rendering (expressions inside macro calls inside ...).
    static let evaluationDepth = 300
    /// Nesting of the values a template builds (lists in lists, namespaces in namespaces).
    static let valueNesting = 100
    /// UTF-8 bytes of any string the template makes, the output included.
    static let stringBytes = 16 << 20
    /// Items of any list the template makes.
    static let listItems = 1 << 20

    static func checkString(bytes: Int, overflow: Bool = false, _ what: String) throws(JinjaError) {
        guard !overflow, bytes <= stringBytes else {
            throw .runtime("\(what) would be longer than the \(stringBytes)-byte limit on template strings")
        }
    }

    static func checkList(items: Int, overflow: Bool = false, _ what: String) throws(JinjaError) {
        guard !overflow, items <= listItems else {
            throw .runtime("\(what) would have more than the \(listItems)-item limit on template lists")
        }
    }
}

/// What one render has spent of its limits; shared by every scope of the render.
final class JinjaBudget {
    private var steps = 0
    private var depth = 0

    func step() throws(JinjaError) {
        steps += 1
        guard steps <= JinjaLimits.steps else {
            throw .runtime("the template ran more than \(JinjaLimits.steps) steps (an endless loop or runaway recursion?)")
        }
    }

    /// Enters one level of evaluation; `leave()` must follow.
    func enter() throws(JinjaError) {
        depth += 1
        guard depth <= JinjaLimits.evaluationDepth else {
            depth -= 1
            throw .runtime("evaluation nested deeper than \(JinjaLimits.evaluationDepth) levels (runaway macro recursion?)")
        }
    }

    func leave() { depth -= 1 }
}
