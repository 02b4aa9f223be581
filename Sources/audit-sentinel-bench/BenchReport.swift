import Foundation

/// One table of results, printed and saved as JSON.
struct BenchReport {
    struct Row: Codable {
        var suite: String
        var name: String
        var eventsPerSecond: Double
        var megabytesPerSecond: Double?
        var ratio: Double?
        var ratioName: String?
    }
    var rows: [Row] = []
    var notes: [String] = []

    mutating func add(_ suite: String, _ name: String, events: Double, bytes: Double? = nil, ratio: Double? = nil, ratioName: String? = nil) {
        rows.append(Row(suite: suite, name: name, eventsPerSecond: events, megabytesPerSecond: bytes.map { $0 / 1e6 }, ratio: ratio, ratioName: ratioName))
    }

    mutating func note(_ text: String) { notes.append(text) }

    func print() {
        let nameWidth = max(40, rows.map(\.name.count).max() ?? 0)
        Swift.print("| suite  | \("benchmark".padding(toLength: nameWidth, withPad: " ", startingAt: 0)) |     events/s |       MB/s | ratio")
        Swift.print("|--------|-\(String(repeating: "-", count: nameWidth))-|--------------|------------|------")
        for row in rows {
            let events = String(format: "%12.0f", row.eventsPerSecond)
            let megabytes = row.megabytesPerSecond.map { String(format: "%10.1f", $0) } ?? String(repeating: " ", count: 10)
            let ratio = row.ratio.map { String(format: "%.1f%@", $0, row.ratioName ?? "") } ?? ""
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
