import FlyingFox
import FlyingSocks
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

    private let processCPU: Counter
    private let lastCPUSeconds = Mutex<Double>(0)

    init() {
        // Which build is running: a constant 1, labelled (the Prometheus convention for build information).
        registry.makeGauge(descriptor: Self.name("build_info", "The running build: version and librdkafka at run time"),
                           labels: [("version", AuditSentinelVersion.current), ("librdkafka", librdkafkaVersion)]).set(to: 1)
        processCPU = registry.makeCounter(descriptor: MetricNameDescriptor(namespace: "process", metricName: "cpu", unitName: "seconds_total",
                                                                           helpText: "User and system CPU time spent, in seconds"))
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

    func exposition() -> [UInt8] {
        updateProcessMetrics()
        return registry.emitToBuffer()
    }

    /// The standard `process_*` series (as Prometheus client libraries export them), read from /proc.
    func updateProcessMetrics() {
        guard let sample = ProcessSample.read() else { return }
        let delta = lastCPUSeconds.withLock { last in
            defer { last = max(last, sample.cpuSeconds) }
            return sample.cpuSeconds - last
        }
        if delta > 0 { processCPU.increment(by: delta) }
        func process(_ metric: String, _ help: String, _ value: Double) {
            registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "process", metricName: metric, helpText: help)).set(to: value)
        }
        process("resident_memory_bytes", "Resident memory size in bytes", sample.residentBytes)
        process("virtual_memory_bytes", "Virtual memory size in bytes", sample.virtualBytes)
        process("open_fds", "Open file descriptors", sample.openFileDescriptors)
        process("max_fds", "The limit of open file descriptors", sample.maxFileDescriptors)
        process("start_time_seconds", "Start time of the process since the Unix epoch, in seconds", sample.startTimeSeconds)
    }
}

/// One reading of the process's resources from Linux's /proc.
struct ProcessSample {
    var cpuSeconds: Double
    var residentBytes: Double
    var virtualBytes: Double
    var openFileDescriptors: Double
    var maxFileDescriptors: Double
    var startTimeSeconds: Double

    static func read() -> ProcessSample? {
        guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
              let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
              let system = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let nameEnd = stat.lastIndex(of: ")") else { return nil }
        // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15, starttime 22.
        let fields = stat[stat.index(after: nameEnd)...].split(separator: " ")
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))
        guard fields.count > 19, let user = Double(fields[11]), let kernel = Double(fields[12]), let started = Double(fields[19]),
              let bootLine = system.split(separator: "\n").first(where: { $0.hasPrefix("btime ") }),
              let boot = Double(bootLine.dropFirst(6)) else { return nil }
        let memory = statm.split(separator: " ").compactMap { Double($0) }
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
        return ProcessSample(cpuSeconds: (user + kernel) / ticks, residentBytes: (memory.count > 1 ? memory[1] : 0) * pageSize,
                             virtualBytes: (memory.first ?? 0) * pageSize, openFileDescriptors: Double(descriptors),
                             maxFileDescriptors: Double(limit.rlim_cur), startTimeSeconds: boot + started / ticks)
    }
}

// MARK: HTTP endpoint

/// `/metrics`, `/healthz` and `/readyz` over FlyingFox (an async HTTP/1.1 server on non-blocking sockets):
/// connections are served concurrently, so idle or slow clients (a port scan, a stuck scraper) never delay
/// a probe. GET and HEAD only. The pipeline stays on its own thread; this runs on Swift's concurrency pool.
///
/// `@unchecked Sendable`: the stored properties are set once in `init` (the server is an actor, the task
/// and port immutable); `stop()` is idempotent through an atomic flag.
final class HTTPEndpoint: @unchecked Sendable {
    struct Response: Sendable {
        var status: Int
        var contentType = "text/plain; charset=utf-8"
        var body: [UInt8]
    }

    static let maxRequestBytes = 8192
    let port: Int
    private let server: HTTPServer
    private let task: Task<Void, Never>
    private let stopped = Atomic<Bool>(false)

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

    /// Binds and starts serving; returns once the socket listens (or throws why it cannot). `listen` is
    /// `host:port` with a numeric host; port 0 picks a free one (see ``port``).
    init(listen: String, handler: @escaping @Sendable (_ path: String) -> Response) throws {
        guard let (host, port) = Self.parseListen(listen) else { throw HTTPEndpointError("invalid listen address \(listen)") }
        let address: any SocketAddress
        do {
            address = host.contains(":") ? try sockaddr_in6.inet6(ip6: host, port: UInt16(port)) : try sockaddr_in.inet(ip4: host, port: UInt16(port))
        } catch {
            throw HTTPEndpointError("http.listen: \(host) is not a numeric IPv4 or IPv6 address")
        }
        // Its own log lines (client disconnects, cancellation at stop) are noise for an operator: off.
        let server = HTTPServer(address: address, timeout: 5, logger: DisabledLogger.disabled, handler: RequestHandler(handler: handler))
        self.server = server
        let failure = Mutex<(any Error)?>(nil)
        task = Task {
            do { try await server.run() } catch { failure.withLock { $0 = $0 ?? error } }
        }
        // Wait (bounded) until it listens, or until run() has failed (address in use, permission).
        let listening = DispatchSemaphore(value: 0)
        Task {
            try? await server.waitUntilListening(timeout: 5)
            listening.signal()
        }
        listening.wait()
        let bound = Self.runBlocking { await server.listeningAddress }
        switch bound {
        case .ip4(_, let boundPort)?, .ip6(_, let boundPort)?:
            self.port = Int(boundPort)
        default:
            task.cancel()
            let reason = failure.withLock { $0 }.map { "\($0)" } ?? "not listening after 5 s"
            throw HTTPEndpointError("cannot listen on \(listen): \(reason)")
        }
    }

    /// Stops accepting, lets requests in flight finish (up to a second), closes every connection.
    func stop() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let server = self.server
        Self.runBlocking { await server.stop(timeout: 1) }
        task.cancel()
    }

    /// Runs async work from the pipeline's threads (never from the concurrency pool) and waits for it.
    private static func runBlocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
        let result = Mutex<T?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            let value = await body()
            result.withLock { $0 = value }
            done.signal()
        }
        done.wait()
        return result.withLock { $0! }
    }

    private struct RequestHandler: HTTPHandler {
        let handler: @Sendable (String) -> Response

        func handleRequest(_ request: HTTPRequest) async throws -> HTTPResponse {
            guard request.method == .GET || request.method == .HEAD else {
                return HTTPResponse(statusCode: .methodNotAllowed, headers: [.contentType: "text/plain; charset=utf-8", HTTPHeader("Allow"): "GET, HEAD"],
                                    body: Data("only GET and HEAD\n".utf8))
            }
            // Probes and scrapers send a few hundred bytes: larger heads are refused, as before.
            let headBytes = request.path.utf8.count + request.headers.reduce(0) { $0 + $1.key.rawValue.utf8.count + $1.value.utf8.count + 4 }
            if headBytes > HTTPEndpoint.maxRequestBytes {
                return HTTPResponse(statusCode: HTTPStatusCode(431, phrase: "Request Header Fields Too Large"),
                                    headers: [.contentType: "text/plain; charset=utf-8"], body: Data("request too large\n".utf8))
            }
            let response = handler(request.path)
            let status = HTTPStatusCode(response.status, phrase: Self.reasons[response.status] ?? "Status")
            // HEAD: the headers GET would send (FlyingFox sends Content-Length of the body given).
            return HTTPResponse(statusCode: status, headers: [.contentType: response.contentType],
                                body: request.method == .HEAD ? Data() : Data(response.body))
        }

        static let reasons = [200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"]
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
