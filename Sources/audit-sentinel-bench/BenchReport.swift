import AuditEvents
import Foundation
import Logging

/// With BENCH_PHASES set, says when a measured interval ran, in CLOCK_MONOTONIC seconds (perf's clock with
/// `-k monotonic`), so that a system-wide profile can be cut to it (scripts/profile-e2e.sh).
func announcePhase(_ name: String, lasted duration: Duration, endedAgo: Duration = .zero) {
    guard ProcessInfo.processInfo.environment["BENCH_PHASES"] != nil else { return }
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    let end = Double(now.tv_sec) + Double(now.tv_nsec) / 1e9 - seconds(endedAgo)
    print(String(format: "phase %@ %.6f %.6f", name, end - seconds(duration), end))
}

/// One table of results, printed and saved as JSON.
struct BenchReport {
    struct Row: Codable {
        var suite: String
        var name: String
        /// nil for rows that measure something other than throughput (memory).
        var eventsPerSecond: Double?
        var megabytesPerSecond: Double?
        var ratio: Double?
        var ratioName: String?
    }
    var rows: [Row] = []
    var notes: [String] = []

    mutating func add(_ suite: String, _ name: String, events: Double?, bytes: Double? = nil, ratio: Double? = nil, ratioName: String? = nil) {
        rows.append(Row(suite: suite, name: name, eventsPerSecond: events, megabytesPerSecond: bytes.map { $0 / 1e6 }, ratio: ratio, ratioName: ratioName))
    }

    mutating func note(_ text: String) { notes.append(text) }

    func print() {
        let nameWidth = max(40, rows.map(\.name.count).max() ?? 0)
        Swift.print("| suite  | \("benchmark".padding(toLength: nameWidth, withPad: " ", startingAt: 0)) |     events/s |       MB/s | ratio")
        Swift.print("|--------|-\(String(repeating: "-", count: nameWidth))-|--------------|------------|------")
        for row in rows {
            let events = row.eventsPerSecond.map { String(format: "%12.0f", $0) } ?? String(repeating: " ", count: 12)
            let megabytes = row.megabytesPerSecond.map { String(format: "%10.1f", $0) } ?? String(repeating: " ", count: 10)
            // Two places below 10: one place had printed 0.754 of raw as "0.8", against a target of 0.8.
            let ratio = row.ratio.map { String(format: $0 < 10 ? "%.2f%@" : "%.1f%@", $0, row.ratioName ?? "") } ?? ""
            Swift.print("| \(row.suite.padding(toLength: 6, withPad: " ", startingAt: 0)) | \(row.name.padding(toLength: nameWidth, withPad: " ", startingAt: 0)) | \(events) | \(megabytes) | \(ratio)")
        }
        for note in notes { Swift.print("  \(note)") }
    }

    func write(to url: URL) throws {
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        struct File: Codable { var rows: [Row]; var notes: [String] }
        try encoder.encode(File(rows: rows, notes: notes)).write(to: url)
    }
}

// MARK: Shared by every suite

/// Silent unless BENCH_LOG_LEVEL names a level (`warning`, `debug`, …): the clients' and pipeline's logs.
let benchLogger: Logger = {
    var logger = Logger(label: "bench")
    logger.logLevel = ProcessInfo.processInfo.environment["BENCH_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
    return logger
}()

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func environmentInt(_ name: String, _ fallback: Int) -> Int { Int(ProcessInfo.processInfo.environment[name] ?? "") ?? fallback }

/// A seeded corpus of audit events at a given match rate.
func corpus(count: Int, matchRate: Double, seed: UInt64) -> [[UInt8]] {
    var traffic = SyntheticAuditTraffic(seed: seed)
    return (0..<count).map { _ in Array(traffic.next(traffic.nextKind(deniedFraction: matchRate)).json.utf8) }
}

/// Runs `body` `rounds` times and keeps the fastest (noise only ever slows down).
func best(rounds: Int, _ body: () -> Int) -> (seconds: Double, result: Int) {
    var fastest = Double.infinity
    var result = 0
    for _ in 0..<rounds {
        let start = ContinuousClock.now
        result = body()
        fastest = min(fastest, seconds(start.duration(to: .now)))
    }
    return (fastest, result)
}
