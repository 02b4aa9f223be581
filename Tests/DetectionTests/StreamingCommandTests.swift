// `match` and `replay` as stream filters: results while the input stays open, a followed file, a stop signal.
import AuditEvents
import Foundation
import TestSupport
import Testing

@Suite("streaming commands")
struct StreamingCommandTests {
    /// The binary with its standard streams as pipes the test holds open.
    final class Running {
        let process = Process()
        let input = Pipe()
        let output = Pipe()
        let errors = Pipe()
        private var pending: [UInt8] = []

        init(_ arguments: [String]) throws {
            process.executableURL = MatchCommandTests.binary
            process.arguments = arguments
            process.standardInput = input
            process.standardOutput = output
            process.standardError = errors
            try process.run()
        }

        func send(_ text: String) { input.fileHandleForWriting.write(Data(text.utf8)) }

        /// The next line of standard output, or nil if none came within the time.
        func line(within seconds: Double) -> String? {
            let fd = output.fileHandleForReading.fileDescriptor
            let deadline = Date().addingTimeInterval(seconds)
            while true {
                if let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    defer { pending.removeSubrange(...newline) }
                    return String(decoding: pending[..<newline], as: UTF8.self)
                }
                let left = deadline.timeIntervalSinceNow
                guard left > 0 else { return nil }
                var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&descriptor, 1, Int32(left * 1000) + 1) > 0 else { continue }
                var chunk = [UInt8](repeating: 0, count: 65536)
                let count = read(fd, &chunk, chunk.count)
                guard count > 0 else { return nil }
                pending += chunk[..<count]
            }
        }

        /// Waits for the exit; the rest of standard output and all of standard error.
        func finish() -> (status: Int32, stdout: String, stderr: String) {
            try? input.fileHandleForWriting.close()
            let rest = output.fileHandleForReading.readDataToEndOfFile()
            let stderr = errors.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return (process.terminationStatus, String(decoding: pending + rest, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
        }
    }

    let rule = packageRoot.appendingPathComponent("Config/rules/kubernetes_denied_service_account_request.toml").path

    func denial(_ traffic: inout SyntheticAuditTraffic, user: String = "system:serviceaccount:payments:checkout-api") -> String {
        traffic.next(.deniedServiceAccount, user: user).json + "\n"
    }

    /// `kubectl logs -f … | audit-sentinel match …`: a result is printed while the pipe stays open, within
    /// a second of its record being written, and the next one too.
    @Test func matchPrintsEachResultWhileItsInputStaysOpen() throws {
        var traffic = SyntheticAuditTraffic(seed: 31, startMilliseconds: 1_763_625_600_000, spacingMilliseconds: 1000)
        let match = try Running(["match", "--rule", rule])
        defer { if match.process.isRunning { match.process.terminate() } }
        match.send(traffic.next(.normal).json + "\n")
        Thread.sleep(forTimeInterval: 0.5)  // the process starting, so the clock below times the record only
        for round in 1...2 {
            let written = Date()
            match.send(denial(&traffic))
            let line = match.line(within: 1)
            let elapsed = Date().timeIntervalSince(written)
            print("match: result \(round) printed \(Int(elapsed * 1000)) ms after its record, input still open")
            #expect(line.map { (try? JSONValue.parse($0))?[path: "event.outcome"] } == "failure", "result \(round) within a second")
        }
        let done = match.finish()
        #expect(done.status == 0)
        #expect(done.stdout.isEmpty)
    }

    /// `--follow` reads what is appended to a file, and a stop signal ends it with the usual status.
    @Test func followReadsAGrowingFileUntilStopped() throws {
        var traffic = SyntheticAuditTraffic(seed: 32, startMilliseconds: 1_763_625_600_000, spacingMilliseconds: 1000)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("follow-\(UUID().uuidString).log").path
        try denial(&traffic).write(toFile: path, atomically: false, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let match = try Running(["match", "--follow", "--query", "event.outcome:failure", path])
        defer { if match.process.isRunning { match.process.terminate() } }
        #expect(match.line(within: 10) != nil, "the file's first record")
        let handle = try #require(FileHandle(forWritingAtPath: path))
        handle.seekToEndOfFile()
        handle.write(Data((traffic.next(.normal).json + "\n" + denial(&traffic)).utf8))
        try handle.close()
        let appended = match.line(within: 10)
        #expect(appended.map { (try? JSONValue.parse($0))?[path: "event.outcome"] } == "failure", "the appended record")
        // Truncated in place (copytruncate): read again from the start.
        try denial(&traffic).write(toFile: path, atomically: false, encoding: .utf8)
        #expect(match.line(within: 10) != nil, "the record written after truncation")
        match.process.interrupt()
        let done = match.finish()
        #expect(done.status == 0)
        #expect(done.stderr.contains("file truncated"))
    }

    /// `replay -` on a pipe: alerts come out while the input is open; SIGINT closes every window, prints
    /// their final versions and the summary, and exits as a finished replay would.
    @Test func replayClosesItsWindowsOnSIGINT() throws {
        var traffic = SyntheticAuditTraffic(seed: 33, startMilliseconds: 1_763_625_600_000, spacingMilliseconds: 1000)
        let replay = try Running(["replay", "--rules", packageRoot.appendingPathComponent("Config/rules").path, "-"])
        defer { if replay.process.isRunning { replay.process.terminate() } }
        for _ in 0..<5 { replay.send(denial(&traffic)) }
        let first = try #require(replay.line(within: 10), "the new alert, while the input is open")
        #expect(try JSONValue.parse(first)[path: "kibana.alert.suppression.docs_count"] == 0)
        replay.process.interrupt()
        let done = replay.finish()
        #expect(done.status == 0)
        let update = try JSONValue.parse(String(done.stdout.split(separator: "\n").last ?? ""))
        #expect(update[path: "kibana.alert.suppression.docs_count"] == 4, "the window closed with the four repeats")
        #expect(done.stderr.contains("SIGINT"))
        #expect(done.stderr.contains("replay: 5 events, 0 undecodable, 1 alerts, 1 updates"))
    }

    /// Unreadable inputs are one line naming the path and why, exit status 2, before any output.
    @Test func unreadableInputsAreOneClearLine() throws {
        let cli = MatchCommandTests()
        let missing = try cli.run(["match", "--query", "a:b", "/nonexistent/audit.log"])
        #expect(missing.status == 2)
        #expect(missing.stderr == "/nonexistent/audit.log: cannot open: No such file or directory\n")
        let replay = try cli.run(["replay", "/nonexistent/audit.log.gz"])
        #expect(replay.status == 2)
        #expect(replay.stderr == "/nonexistent/audit.log.gz: cannot open: No such file or directory\n")
        let noRules = FileManager.default.temporaryDirectory.appendingPathComponent("rules-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: noRules, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: noRules) }
        let empty = try cli.run(["replay", "--rules", noRules.path, "-"], stdin: [])
        #expect(empty.status == 2)
        #expect(empty.stderr.contains("no rules found in \(noRules.path)"))
        let check = try cli.run(["check-rule", noRules.path])
        #expect(check.status == 2)
        #expect(check.stderr == "ERR \(noRules.path): no rule files (*.toml) in this directory\n")
        let rule = try cli.run(["match", "--rule", "/nonexistent/rule.toml", "-"], stdin: [])
        #expect(rule.status == 2)
        #expect(rule.stderr == "/nonexistent/rule.toml: cannot open: No such file or directory\n")
        // Output redirected into a directory being read is refused, not read back without end.
        let log = noRules.appendingPathComponent("audit.log")
        try Data("{}\n".utf8).write(to: log)
        let loop = Process()
        loop.executableURL = MatchCommandTests.binary
        loop.arguments = ["match", "--query", "*", noRules.path]
        let results = noRules.appendingPathComponent("results.ndjson")
        FileManager.default.createFile(atPath: results.path, contents: nil)
        loop.standardOutput = try FileHandle(forWritingTo: results)
        let loopErrors = Pipe()
        loop.standardError = loopErrors
        try loop.run()
        let loopMessage = String(decoding: loopErrors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        loop.waitUntilExit()
        #expect(loop.terminationStatus == 2)
        #expect(loopMessage.contains("\(results.path): input file is also the output; skipped"))
        let corrupt = FileManager.default.temporaryDirectory.appendingPathComponent("corrupt-\(UUID().uuidString).gz")
        try Data([0x1F, 0x8B, 0x08, 0x00, 0xFF, 0xFF, 0xFF, 0xFF]).write(to: corrupt)
        defer { try? FileManager.default.removeItem(at: corrupt) }
        let bad = try cli.run(["match", "--query", "a:b", corrupt.path])
        #expect(bad.status == 2)
        #expect(bad.stderr.hasPrefix("\(corrupt.path): "), "\(bad.stderr)")
        #expect(bad.stderr.contains("gzip"))
    }
}
