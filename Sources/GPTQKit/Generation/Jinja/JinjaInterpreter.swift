/// Variables visible at one point of a template. A loop iteration and a macro call get a
/// child scope, so that `set` inside them does not leak out (Jinja's rule); `if` does not.
final class JinjaScope {
    private var variables: [String: JinjaValue]
    let parent: JinjaScope?
    /// The render's spending against `JinjaLimits`, the same object in every scope of it.
    let budget: JinjaBudget

    init(_ variables: [String: JinjaValue] = [:], parent: JinjaScope? = nil) {
        self.variables = variables
        self.parent = parent
        budget = parent?.budget ?? JinjaBudget()
    }

    func lookup(_ name: String) -> JinjaValue? {
        var scope: JinjaScope? = self
        while let s = scope {
            if let v = s.variables[name] { return v }
            scope = s.parent
        }
        return nil
    }

    func set(_ name: String, _ value: JinjaValue) { variables[name] = value }
}

/// Runs a parsed template.
struct JinjaInterpreter {
    private enum Flow { case normal, breakLoop, continueLoop }

    static func render(_ nodes: [JinjaNode], globals: JinjaScope) throws(JinjaError) -> String {
        var output = ""
        let scope = JinjaScope(parent: globals)
        _ = try run(nodes, scope, &output)
        return output
    }

    private static func append(_ text: String, to output: inout String) throws(JinjaError) {
        try JinjaLimits.checkString(bytes: output.utf8.count + text.utf8.count, "the output")
        output += text
    }

    private static func run(_ nodes: [JinjaNode], _ scope: JinjaScope, _ output: inout String) throws(JinjaError) -> Flow {
        try scope.budget.enter()
        defer { scope.budget.leave() }
        for node in nodes {
            try scope.budget.step()
            switch node {
            case let .text(t):
                try append(t, to: &output)
            case let .output(expression):
                try append(try evaluate(expression, scope).text, to: &output)
            case let .conditional(branches, otherwise):
                var chosen = otherwise
                for branch in branches where try evaluate(branch.condition, scope).isTruthy {
                    chosen = branch.body
                    break
                }
                let flow = try run(chosen, scope, &output)
                if flow != .normal { return flow }
            case let .loop(targets, iterable, filter, body, otherwise, line):
                try runLoop(targets: targets, iterable: iterable, filter: filter, body: body, otherwise: otherwise, line: line, scope, &output)
            case let .set(target, expression):
                let value = try evaluate(expression, scope)
                // Values that outlive a step go through `set`: bounding their nesting here keeps
                // a loop from growing one past what printing and freeing it can recurse through.
                if value.nests(deeperThan: JinjaLimits.valueNesting) {
                    throw .runtime("a value nested deeper than \(JinjaLimits.valueNesting) levels")
                }
                switch target {
                case let .name(name): scope.set(name, value)
                case let .names(names): try assign(names, value, scope)
                case let .attribute(object, attribute):
                    guard case let .namespace(ns)? = scope.lookup(object) else {
                        throw .runtime("cannot set '\(attribute)' on '\(object)': only a namespace() takes attributes")
                    }
                    // A namespace inside itself would print (and free) without end.
                    guard !value.nests(deeperThan: JinjaLimits.valueNesting, orReaches: ns) else {
                        throw .runtime("cannot set '\(object).\(attribute)' to a value that holds '\(object)' itself")
                    }
                    ns.attributes[attribute] = value
                }
            case let .setBlock(name, body):
                var captured = ""
                _ = try run(body, scope, &captured)
                scope.set(name, .string(captured))
            case let .macro(name, parameters, body):
                scope.set(name, .function(makeMacro(name: name, parameters: parameters, body: body, definedIn: scope)))
            case .breakLoop: return .breakLoop
            case .continueLoop: return .continueLoop
            }
        }
        return .normal
    }

    private static func assign(_ names: [String], _ value: JinjaValue, _ scope: JinjaScope) throws(JinjaError) {
        let items = try value.iterated()
        guard items.count == names.count else {
            throw .runtime("cannot unpack \(items.count) values into \(names.count) names (\(names.joined(separator: ", ")))")
        }
        for (name, item) in zip(names, items) { scope.set(name, item) }
    }

    private static func runLoop(targets: [String], iterable: JinjaExpression, filter: JinjaExpression?, body: [JinjaNode],
                                otherwise: [JinjaNode], line: Int, _ scope: JinjaScope, _ output: inout String) throws(JinjaError) {
        var items = try evaluate(iterable, scope).iterated()
        if let filter {
            var kept: [JinjaValue] = []
            for item in items {
                try scope.budget.step()
                let probe = JinjaScope(parent: scope)
                try bind(targets, item, probe)
                if try evaluate(filter, probe).isTruthy { kept.append(item) }
            }
            items = kept
        }
        if items.isEmpty {
            _ = try run(otherwise, scope, &output)
            return
        }
        for (i, item) in items.enumerated() {
            try scope.budget.step()  // an empty body costs nothing else, and a loop may still be endless
            let iteration = JinjaScope(parent: scope)
            try bind(targets, item, iteration)
            var loop = JinjaDict([
                ("index", .int(i + 1)), ("index0", .int(i)),
                ("revindex", .int(items.count - i)), ("revindex0", .int(items.count - i - 1)),
                ("first", .bool(i == 0)), ("last", .bool(i == items.count - 1)),
                ("length", .int(items.count)), ("depth", .int(1)), ("depth0", .int(0)),
            ])
            if i > 0 { loop["previtem"] = items[i - 1] }
            if i + 1 < items.count { loop["nextitem"] = items[i + 1] }
            loop["cycle"] = .function(JinjaFunction("loop.cycle") { arguments throws(JinjaError) in
                guard !arguments.positional.isEmpty else { throw .runtime("loop.cycle() needs at least one value") }
                return arguments.positional[i % arguments.positional.count]
            })
            iteration.set("loop", .dict(loop))
            if try run(body, iteration, &output) == .breakLoop { break }
        }
    }

    private static func bind(_ targets: [String], _ item: JinjaValue, _ scope: JinjaScope) throws(JinjaError) {
        if targets.count == 1 { scope.set(targets[0], item) } else { try assign(targets, item, scope) }
    }

    private static func makeMacro(name: String, parameters: [(String, JinjaExpression?)], body: [JinjaNode],
                                  definedIn scope: JinjaScope) -> JinjaFunction {
        JinjaFunction(name) { arguments throws(JinjaError) in
            guard arguments.positional.count <= parameters.count else {
                throw .runtime("macro '\(name)' takes \(parameters.count) arguments, got \(arguments.positional.count)")
            }
            let call = JinjaScope(parent: scope)
            for (i, (parameter, defaultValue)) in parameters.enumerated() {
                if let given = arguments.optional(i, parameter) {
                    call.set(parameter, given)
                } else if let defaultValue {
                    call.set(parameter, try evaluate(defaultValue, call))
                } else {
                    call.set(parameter, .undefined(parameter))
                }
            }
            for (keyword, _) in arguments.keywords where !parameters.contains(where: { $0.0 == keyword }) {
                throw .runtime("macro '\(name)' has no parameter '\(keyword)'")
            }
            var output = ""
            _ = try run(body, call, &output)
            return .string(output)
        }
    }

    // MARK: expressions

    static func evaluate(_ expression: JinjaExpression, _ scope: JinjaScope) throws(JinjaError) -> JinjaValue {
        try scope.budget.step()
        try scope.budget.enter()
        defer { scope.budget.leave() }
        switch expression {
        case let .literal(literal):
            switch literal {
            case .none: return .none
            case let .bool(b): return .bool(b)
            case let .int(i): return .int(i)
            case let .double(d): return .double(d)
            case let .string(s): return .string(s)
            }
        case let .name(name):
            return scope.lookup(name) ?? .undefined(name)
        case let .list(items):
            var values: [JinjaValue] = []
            for item in items { values.append(try evaluate(item, scope)) }
            return .list(values)
        case let .tuple(items):
            var values: [JinjaValue] = []
            for item in items { values.append(try evaluate(item, scope)) }
            return .tuple(values)
        case let .dict(pairs):
            var dict = JinjaDict()
            for (k, v) in pairs {
                guard case let .string(key) = try evaluate(k, scope) else { throw .runtime("dict keys must be strings") }
                dict[key] = try evaluate(v, scope)
            }
            return .dict(dict)
        case let .attribute(base, name):
            return try JinjaBuiltins.attribute(try evaluate(base, scope), name)
        case let .item(base, key):
            return try JinjaBuiltins.item(try evaluate(base, scope), try evaluate(key, scope))
        case let .slice(base, start, stop, step):
            func bound(_ e: JinjaExpression?) throws(JinjaError) -> Int? {
                guard let e else { return nil }
                let v = try evaluate(e, scope)
                if case .none = v { return nil }
                guard let i = v.integer else { throw .runtime("slice indices must be integers, not \(v.typeName)") }
                return i
            }
            return try JinjaBuiltins.slice(try evaluate(base, scope), start: try bound(start), stop: try bound(stop), step: try bound(step))
        case let .call(callee, arguments):
            let function = try evaluate(callee, scope)
            guard case let .function(f) = function else {
                if case let .undefined(name) = function { throw .runtime("'\(name)' is undefined") }
                throw .runtime("'\(function.typeName)' object is not callable")
            }
            return try f.call(try evaluate(arguments, callee: f.name, scope))
        case let .filter(base, name, arguments):
            let value = try evaluate(base, scope)
            return try JinjaBuiltins.filter(name, value, try evaluate(arguments, callee: name, scope))
        case let .test(base, name, arguments, negated):
            let value = try evaluate(base, scope)
            let result = try JinjaBuiltins.test(name, value, try evaluate(arguments, callee: name, scope))
            return .bool(result != negated)
        case let .not(operand):
            return .bool(!(try evaluate(operand, scope).isTruthy))
        case let .negate(operand):
            switch try evaluate(operand, scope) {
            case let .int(i):
                guard i != .min else { throw .runtime("integer overflow in unary -") }
                return .int(-i)
            case let .double(d): return .double(-d)
            case let .bool(b): return .int(b ? -1 : 0)
            case let other: throw .runtime("bad operand type for unary -: '\(other.typeName)'")
            }
        case let .binary(op, left, right):
            return try JinjaBuiltins.binary(op, try evaluate(left, scope), try evaluate(right, scope))
        case let .and(left, right):
            let l = try evaluate(left, scope)
            return l.isTruthy ? try evaluate(right, scope) : l
        case let .or(left, right):
            let l = try evaluate(left, scope)
            return l.isTruthy ? l : try evaluate(right, scope)
        case let .conditional(value, condition, otherwise):
            if try evaluate(condition, scope).isTruthy { return try evaluate(value, scope) }
            guard let otherwise else { return .undefined("(conditional without else)") }
            return try evaluate(otherwise, scope)
        }
    }

    private static func evaluate(_ arguments: JinjaCallArguments, callee: String, _ scope: JinjaScope) throws(JinjaError) -> JinjaArguments {
        var positional: [JinjaValue] = []
        for a in arguments.positional { positional.append(try evaluate(a, scope)) }
        var keywords: [(String, JinjaValue)] = []
        for (k, a) in arguments.keywords { keywords.append((k, try evaluate(a, scope))) }
        return JinjaArguments(positional, keywords: keywords, callee: callee)
    }
}
