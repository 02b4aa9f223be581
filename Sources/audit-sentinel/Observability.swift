import Foundation
import Kafka
import Logging
import Pipeline
import Prometheus
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// MARK: Metrics

/// The pipeline's counters as Prometheus metrics. Counters advance by the difference between snapshots, so
/// the pipeline keeps plain numbers (no metric calls per record) and the registry stays monotonic.
final class PipelineMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let last = Mutex(PipelineCounters())
    private let lagGauges = Mutex<[TopicPartition: Gauge]>([:])
    private let latency: DurationHistogram

    init() {
        latency = registry.makeDurationHistogram(
            descriptor: Self.name("alert_latency", unit: "seconds", "From a match's event.ingested to its alert's acknowledgement by the broker"),
            buckets: [.milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
                      .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30), .seconds(60)])
    }

    static func name(_ metric: String, unit: String = "", _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "audit_sentinel", metricName: metric, unitName: unit, helpText: help)
    }

    func recordAlertLatency(milliseconds: Int64) { latency.record(.milliseconds(milliseconds)) }

    private func counter(_ metric: String, _ help: String, _ labels: [(String, String)] = []) -> Counter {
        registry.makeCounter(descriptor: Self.name(metric, unit: "total", help), labels: labels)
    }

    private func gauge(_ metric: String, _ help: String, _ labels: [(String, String)] = []) -> Gauge {
        registry.makeGauge(descriptor: Self.name(metric, help), labels: labels)
    }

    /// Brings the registry up to date with a snapshot of the pipeline.
    func update(_ now: PipelineCounters, openWindows: Int, ready: Bool) {
        let before = last.withLock { previous in
            defer { previous = now }
            return previous
        }
        func advance(_ metric: String, _ help: String, _ labels: [(String, String)] = [], _ new: Int, _ old: Int) {
            // Registered even at zero so that dashboards see every series from the start.
            let counter = counter(metric, help, labels)
            if new > old { counter.increment(by: Int64(new - old)) }
        }
        advance("records_consumed", "Records read from the input and internal topics", [], now.recordsConsumed, before.recordsConsumed)
        advance("events_decoded", "Audit events decoded from input records", [], now.eventsDecoded, before.eventsDecoded)
        advance("prefilter_rejected", "Records the rules' prefilter proved unable to match", [], now.prefilterRejected, before.prefilterRejected)
        for (reason, count) in now.decodeErrors {
            advance("decode_errors", "Undecodable records or events, by reason", [("reason", reason)], count, before.decodeErrors[reason] ?? 0)
        }
        advance("dead_letter_records", "Records written to the dead-letter topic", [], now.deadLettered, before.deadLettered)
        for (rule, count) in now.matches {
            advance("matches", "Events that matched a rule", [("rule_id", rule)], count, before.matches[rule] ?? 0)
        }
        for (rule, count) in now.alertsNewByRule {
            advance("alerts", "Alert documents published", [("rule_id", rule), ("kind", "new")], count, before.alertsNewByRule[rule] ?? 0)
        }
        for (rule, count) in now.alertsUpdatedByRule {
            advance("alerts", "Alert documents published", [("rule_id", rule), ("kind", "update")], count, before.alertsUpdatedByRule[rule] ?? 0)
        }
        advance("suppressed_matches", "Matches folded into an open alert instead of alerting", [], now.suppressedMatches, before.suppressedMatches)
        advance("late_matches", "Matches older than their window's grace period", [], now.lateMatches, before.lateMatches)
        advance("duplicate_matches", "Matches recognized as replays of ones already applied", [], now.duplicateMatches, before.duplicateMatches)
        advance("produce_retries", "Outputs resent after a failed delivery", [], now.produceRetries, before.produceRetries)
        advance("commit_retries", "Offset commits the group refused (records are read again)", [], now.commitRetries, before.commitRetries)
        advance("rebalances", "Consumer-group rebalance events", [], now.rebalances, before.rebalances)
        advance("restored_keys", "State keys restored from changelogs", [], now.restoredKeys, before.restoredKeys)
        advance("restore_failures", "State partitions that could not be restored", [], now.restoreFailures, before.restoreFailures)
        gauge("open_windows", "Suppression windows open on this instance").set(to: Double(openWindows))
        gauge("ready", "1 when partitions are assigned and their state restored").set(to: ready ? 1 : 0)
        lagGauges.withLock { gauges in
            for (partition, lag) in now.lag {
                let gauge = gauges[partition] ?? gauge("consumer_lag", "Records behind the end of an assigned input partition",
                                                       [("topic", partition.topic), ("partition", "\(partition.partition)")])
                gauges[partition] = gauge
                gauge.set(to: Double(lag))
            }
            for (partition, gauge) in gauges where now.lag[partition] == nil {
                registry.unregisterGauge(gauge)
                gauges.removeValue(forKey: partition)
            }
        }
    }

    func exposition() -> [UInt8] { registry.emitToBuffer() }
}

// MARK: HTTP endpoint

/// A deliberately small HTTP/1.1 server for `/metrics`, `/healthz` and `/readyz`: GET and HEAD only, one
/// connection at a time with short timeouts, requests larger than 8 KiB refused. Blocking sockets on one
/// thread keep it independent of the pipeline's thread and free of an event-loop dependency.
final class HTTPEndpoint: @unchecked Sendable {
    struct Response {
        var status: Int
        var contentType = "text/plain; charset=utf-8"
        var body: [UInt8]
    }

    static let maxRequestBytes = 8192
    private let socket: Int32
    let port: Int
    private let handler: @Sendable (String) -> Response
    private let stopped = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)

    /// "127.0.0.1:9464", "[::1]:9464", "0.0.0.0:9464" → host and port.
    static func parseListen(_ text: String) -> (host: String, port: Int)? {
        let host: Substring, port: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            port = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let number = Int(port), (0...65535).contains(number) else { return nil }
        return (String(host), number)
    }

    /// Binds and starts serving. `listen` is `host:port`; port 0 picks a free one (see ``port``).
    init(listen: String, handler: @escaping @Sendable (_ path: String) -> Response) throws {
        guard let (host, port) = Self.parseListen(listen) else { throw HTTPEndpointError("invalid listen address \(listen)") }
        self.handler = handler
        var hints = addrinfo()
        hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var info: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &info) == 0, let address = info else {
            throw HTTPEndpointError("http.listen: \(host) is not a numeric IPv4 or IPv6 address")
        }
        defer { freeaddrinfo(info) }
        let fd = Glibc.socket(address.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HTTPEndpointError("socket: \(String(cString: strerror(errno)))") }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        guard bind(fd, address.pointee.ai_addr, address.pointee.ai_addrlen) == 0, Glibc.listen(fd, 16) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw HTTPEndpointError("cannot listen on \(listen): \(reason)")
        }
        var bound = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        // sin_port and sin6_port both sit at offset 2, in network order.
        self.port = Int(withUnsafeBytes(of: bound) { UInt16(bigEndian: $0.load(fromByteOffset: 2, as: UInt16.self)) })
        socket = fd
        let thread = Thread { [self] in
            defer { finished.signal() }
            serve()
        }
        thread.name = "http-endpoint"
        thread.start()
    }

    func stop() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        shutdown(socket, Int32(SHUT_RDWR))
        close(socket)
        finished.wait()
    }

    private func serve() {
        while !stopped.load(ordering: .acquiring) {
            let client = accept(socket, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return  // closed by stop()
            }
            var timeout = timeval(tv_sec: 2, tv_usec: 0)
            setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            respond(on: client)
            close(client)
        }
    }

    private func respond(on client: Int32) {
        var request: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 2048)
        let end: [UInt8] = Array("\r\n\r\n".utf8)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
            if count <= 0 { return }
            request += buffer[0..<count]
            if request.count > Self.maxRequestBytes {
                write(client, Response(status: 431, body: Array("request too large\n".utf8)), head: false)
                return
            }
            if request.firstRange(of: end) != nil { break }
        }
        let line = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
        let parts = line.split(separator: " ")
        guard parts.count == 3, parts[2].hasPrefix("HTTP/1.") else {
            write(client, Response(status: 400, body: Array("bad request\n".utf8)), head: false)
            return
        }
        let method = parts[0]
        guard method == "GET" || method == "HEAD" else {
            write(client, Response(status: 405, body: Array("only GET and HEAD\n".utf8)), head: false)
            return
        }
        let path = String(parts[1].prefix { $0 != "?" })
        write(client, handler(path), head: method == "HEAD")
    }

    private func write(_ client: Int32, _ response: Response, head: Bool) {
        let reasons = [200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 431: "Request Header Fields Too Large",
                       503: "Service Unavailable"]
        var header = "HTTP/1.1 \(response.status) \(reasons[response.status] ?? "Status")\r\n"
        header += "Content-Type: \(response.contentType)\r\nContent-Length: \(response.body.count)\r\nConnection: close\r\n"
        if response.status == 405 { header += "Allow: GET, HEAD\r\n" }
        header += "\r\n"
        var bytes = Array(header.utf8)
        if !head { bytes += response.body }
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count <= 0 { return }
            sent += count
        }
    }
}

struct HTTPEndpointError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

// MARK: Logging

/// swift-log to standard error, as text or as JSON lines (one object per line: time, level, label, message and
/// metadata), for log shippers. Secrets never reach here: Kafka configurations print redacted.
struct SentinelLogHandler: LogHandler {
    enum Format: String { case text, json }
    let label: String
    let format: Format
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?
    private static let lock = NSLock()

    init(label: String, format: Format, level: Logger.Level) {
        self.label = label
        self.format = format
        logLevel = level
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        let time = Self.timestamp()
        let line: String
        switch format {
        case .text:
            let fields = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            line = "\(time) \(event.level) \(label): \(event.message)" + (fields.isEmpty ? "" : " " + fields)
        case .json:
            var object = "{\"time\":\(Self.quote(time)),\"level\":\(Self.quote(event.level.rawValue)),\"logger\":\(Self.quote(label)),"
                + "\"message\":\(Self.quote(event.message.description))"
            for (key, value) in merged.sorted(by: { $0.key < $1.key }) { object += ",\(Self.quote(key)):\(Self.quote(value.description))" }
            line = object + "}"
        }
        Self.lock.lock()
        defer { Self.lock.unlock() }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var parts = tm()
        var seconds = now.tv_sec
        gmtime_r(&seconds, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
                      parts.tm_hour, parts.tm_min, parts.tm_sec, now.tv_nsec / 1_000_000)
    }

    /// A JSON string literal.
    static func quote(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where scalar.value < 0x20: result += String(format: "\\u%04x", scalar.value)
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}
