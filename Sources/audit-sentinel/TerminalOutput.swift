// What the offline commands write: results through a buffer flushed before any wait for input, and the
// progress line of a long replay on a terminal.
import Foundation

/// Results to a descriptor, buffered: flushed when 64 KB are pending, before the input waits (so a result
/// is out while its input pipe stays open) and at the end. A write error ends the command with status 2;
/// a closed pipe ends it as SIGPIPE ends `grep` (the commands leave that signal's default action alone).
final class ResultOutput {
    let fd: Int32
    private let name: String
    private var pending: [UInt8] = []

    init(fd: Int32 = STDOUT_FILENO, name: String = "standard output") {
        self.fd = fd
        self.name = name
        pending.reserveCapacity(1 << 16)
    }

    /// Opens (creating or truncating) a file for the results, or says why it cannot.
    convenience init(path: String) throws(InputError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .cannotOpen(path: path, errno: errno) }
        self.init(fd: fd, name: path)
    }

    func write(line bytes: some Collection<UInt8>) {
        pending.append(contentsOf: bytes)
        pending.append(UInt8(ascii: "\n"))
        if pending.count >= 1 << 16 { flush() }
    }

    func flush() {
        var written = 0
        while written < pending.count {
            let count = pending.withUnsafeBytes { Foundation.write(fd, $0.baseAddress! + written, $0.count - written) }
            if count < 0 {
                if errno == EINTR { continue }
                printError("\(name): cannot write: \(String(cString: strerror(errno)))")
                exit(2)
            }
            written += count
        }
        pending.removeAll(keepingCapacity: true)
    }
}

/// The live line of a long replay: bytes read of the total, events per second, alerts so far and the
/// time left. Drawn only when standard error is a terminal, at most four times a second.
struct ProgressLine {
    let enabled: Bool
    let totalBytes: Int64?
    private let started: UInt64
    private var lastDrawn: UInt64 = 0

    init(totalBytes: Int64?, enabled: Bool = isatty(STDERR_FILENO) == 1) {
        self.totalBytes = totalBytes
        self.enabled = enabled
        started = DispatchTime.now().uptimeNanoseconds
    }

    mutating func update(bytesRead: Int64, events: Int, alerts: Int) {
        guard enabled else { return }
        let now = DispatchTime.now().uptimeNanoseconds
        guard now - lastDrawn >= 250_000_000 else { return }
        lastDrawn = now
        let text = Self.text(bytesRead: bytesRead, totalBytes: totalBytes, events: events, alerts: alerts,
                             elapsedSeconds: Double(now - started) / 1e9)
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + text).utf8))
    }

    /// Clears the line before the summary is printed.
    func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }

    static func text(bytesRead: Int64, totalBytes: Int64?, events: Int, alerts: Int, elapsedSeconds: Double) -> String {
        var parts: [String] = []
        if let totalBytes, totalBytes > 0 {
            let fraction = min(1, Double(bytesRead) / Double(totalBytes))
            parts.append("\(megabytes(bytesRead)) of \(megabytes(totalBytes)) MB (\(Int(fraction * 100)) %)")
        } else {
            parts.append("\(megabytes(bytesRead)) MB")
        }
        let rate = elapsedSeconds > 0 ? Double(events) / elapsedSeconds : 0
        parts.append("\(Int(rate.rounded())) events/s")
        parts.append("\(alerts) alerts")
        if let totalBytes, totalBytes > 0, bytesRead > 0, elapsedSeconds > 0 {
            let left = max(0, Double(totalBytes - bytesRead) / (Double(bytesRead) / elapsedSeconds))
            parts.append("\(clock(left)) left")
        }
        return parts.joined(separator: ", ")
    }

    private static func megabytes(_ bytes: Int64) -> String {
        let value = Double(bytes) / 1_000_000
        return value < 10 ? String(format: "%.1f", value) : String(Int(value.rounded()))
    }

    private static func clock(_ seconds: Double) -> String {
        let total = Int(seconds.rounded(.up))
        return total >= 3600 ? String(format: "%d:%02d:%02d", total / 3600, total / 60 % 60, total % 60)
                             : String(format: "%d:%02d", total / 60, total % 60)
    }
}
