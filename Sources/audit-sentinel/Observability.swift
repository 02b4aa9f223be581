// The HTTP endpoint (/metrics, /healthz, /readyz on FlyingFox) and the log handler (text or ECS JSON lines).
import FlyingFox
import FlyingSocks
import AuditEvents
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

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

    /// Stops accepting, lets requests in flight finish (up to a second), closes every connection (from the
    /// service group's endpoint service).
    func stopServing() async {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        await server.stop(timeout: 1)
        task.cancel()
    }

    /// Runs async work from a thread outside the concurrency pool (the command's, in `init`) and waits for it.
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

/// swift-log to standard error, as text or as ECS JSON lines (one object per line, Elastic Common Schema
/// field names as Elastic's ecs-logging libraries write them: `@timestamp`, `log.level`, `message`,
/// `log.logger`, `log.origin.*`, `service.*`, `process.pid`, `ecs.version`), for log shippers. Metadata keys
/// that name an ECS field (`error.message`, `url.full`, …) are written as they are; the others go under
/// `audit_sentinel.` (ECS's advice for custom fields). Secrets never reach here: Kafka configurations print redacted.
struct SentinelLogHandler: LogHandler {
    enum Format: String { case text, json }
    let label: String
    let format: Format
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?
    private static let lock = NSLock()
    static let ecsVersion = "8.11.0"
    /// ECS field sets our metadata keys may name directly.
    static let ecsFieldSets = ["error.", "event.", "url.", "process.", "service.", "log.", "labels.", "orchestrator.", "user.", "host.", "rule."]
    private static let pid = getpid()

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
            var object = "{\"@timestamp\":\(Self.quote(time)),\"log.level\":\(Self.quote(event.level.rawValue)),"
                + "\"message\":\(Self.quote(event.message.description)),\"ecs.version\":\"\(Self.ecsVersion)\","
                + "\"log.logger\":\(Self.quote(label)),\"log.origin.file.name\":\(Self.quote(String(event.file.split(separator: "/").last ?? ""))),"
                + "\"log.origin.file.line\":\(event.line),\"log.origin.function\":\(Self.quote(event.function)),"
                + "\"service.name\":\"audit-sentinel\",\"service.version\":\(Self.quote(AuditSentinelVersion.current)),\"process.pid\":\(Self.pid)"
            if event.source != label { object += ",\"audit_sentinel.source\":\(Self.quote(event.source))" }
            for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
                let name = Self.ecsFieldSets.contains(where: key.hasPrefix) ? key : "audit_sentinel." + key
                object += ",\(Self.quote(name)):\(Self.quote(value.description))"
            }
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

    /// A JSON string literal (the project's one writer of them).
    static func quote(_ text: String) -> String {
        var bytes: [UInt8] = []
        writeJSONString(text, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }
}
