extension StringProtocol {
    /// The text without leading and trailing whitespace, as Python's str.strip().
    public func strippingWhitespace() -> String {
        guard let first = firstIndex(where: { !$0.isWhitespace }) else { return "" }
        let last = lastIndex(where: { !$0.isWhitespace })!
        return String(self[first...last])
    }
}

/// Precision, recall and their harmonic mean.
public struct PRF: Sendable, Equatable {
    public var precision: Double
    public var recall: Double
    public var fmeasure: Double

    public init(precision: Double, recall: Double) {
        self.precision = precision
        self.recall = recall
        fmeasure = precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0
    }
}

public struct RougeScores: Sendable, Equatable {
    public var rouge1: PRF
    public var rouge2: PRF
    public var rougeL: PRF
}

/// ROUGE-1, ROUGE-2 and ROUGE-L as Google's rouge-score package computes them with
/// use_stemmer=False: text lower-cased, every run of characters other than a-z and 0-9 made
/// a space, split on spaces; n-gram overlap with clipped counts; LCS over the token lists.
/// (rouge-score, not the `rouge` package AutoGPTQ used: rouge-score is the reference
/// implementation of Lin's ROUGE that lm-eval and most papers report.)
public enum Rouge {
    public static func tokens(_ text: String) -> [String] {
        var out: [String] = [], current = ""
        for scalar in text.lowercased().unicodeScalars {
            if ("a"..."z").contains(scalar) || ("0"..."9").contains(scalar) { current.unicodeScalars.append(scalar) }
            else if !current.isEmpty { out.append(current); current = "" }
        }
        if !current.isEmpty { out.append(current) }
        return out
    }

    public static func score(target: String, prediction: String) -> RougeScores {
        let t = tokens(target), p = tokens(prediction)
        return RougeScores(rouge1: ngramOverlap(t, p, n: 1), rouge2: ngramOverlap(t, p, n: 2), rougeL: longestCommonSubsequence(t, p))
    }

    static func ngramOverlap(_ target: [String], _ prediction: [String], n: Int) -> PRF {
        func counts(_ tokens: [String]) -> [ArraySlice<String>: Int] {
            var c: [ArraySlice<String>: Int] = [:]
            if tokens.count >= n { for i in 0...(tokens.count - n) { c[tokens[i..<(i + n)], default: 0] += 1 } }
            return c
        }
        let targetCounts = counts(target), predictionCounts = counts(prediction)
        let overlap = targetCounts.reduce(0) { $0 + min($1.value, predictionCounts[$1.key] ?? 0) }
        let targetTotal = max(0, target.count - n + 1), predictionTotal = max(0, prediction.count - n + 1)
        return PRF(precision: Double(overlap) / Double(max(predictionTotal, 1)), recall: Double(overlap) / Double(max(targetTotal, 1)))
    }

    static func longestCommonSubsequence(_ target: [String], _ prediction: [String]) -> PRF {
        guard !target.isEmpty, !prediction.isEmpty else { return PRF(precision: 0, recall: 0) }
        var previous = [Int](repeating: 0, count: prediction.count + 1), row = previous
        for t in target {
            for j in 1...prediction.count { row[j] = t == prediction[j - 1] ? previous[j - 1] + 1 : max(previous[j], row[j - 1]) }
            swap(&previous, &row)
        }
        let lcs = Double(previous[prediction.count])
        return PRF(precision: lcs / Double(prediction.count), recall: lcs / Double(target.count))
    }

    /// The mean of each score over the pairs (rouge-score's per-pair scores averaged, as AutoGPTQ's avg=True).
    public static func mean(_ scores: [RougeScores]) -> RougeScores {
        func average(_ pick: (RougeScores) -> PRF) -> PRF {
            let n = Double(max(scores.count, 1))
            var prf = PRF(precision: scores.reduce(0) { $0 + pick($1).precision } / n, recall: scores.reduce(0) { $0 + pick($1).recall } / n)
            prf.fmeasure = scores.reduce(0) { $0 + pick($1).fmeasure } / n
            return prf
        }
        return RougeScores(rouge1: average(\.rouge1), rouge2: average(\.rouge2), rougeL: average(\.rougeL))
    }
}

/// AutoGPTQ's SequenceClassificationTask mapping of generated text onto class names.
public enum ClassMatching {
    /// Levenshtein distance over characters.
    public static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        var previous = Array(0...b.count), row = previous
        for i in 1...a.count {
            row[0] = i
            for j in 1...b.count {
                row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            swap(&previous, &row)
        }
        return previous[b.count]
    }

    /// The index of the class nearest to `prediction` by edit distance (the first on ties),
    /// both stripped and lower-cased.
    public static func closestClass(_ prediction: String, classes: [String]) -> Int {
        let text = prediction.strippingWhitespace().lowercased()
        var best = 0, bestDistance = Int.max
        for (i, name) in classes.enumerated() {
            let d = editDistance(text, name.strippingWhitespace().lowercased())
            if d < bestDistance { (best, bestDistance) = (i, d) }
        }
        return best
    }

    /// The most frequent vote; on ties, the one that came first (Python's Counter.most_common).
    public static func majority(_ votes: [Int]) -> Int {
        precondition(!votes.isEmpty, "a majority vote needs at least one vote")
        var counts: [Int: Int] = [:]
        for v in votes { counts[v, default: 0] += 1 }
        var best = votes[0]
        for v in votes where counts[v]! > counts[best]! { best = v }
        return best
    }
}
