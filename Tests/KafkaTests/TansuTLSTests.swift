import Foundation
import Kafka
import Logging
import Synchronization
import TestSupport
import Testing

/// TLS to a real broker: tansu (plaintext, memory storage) behind socat's OpenSSL listener, with a CA and
/// certificates made by openssl for this run. tansu advertises the TLS address, so every connection the
/// client makes — bootstrap and the partition leader — goes through TLS. (tansu's own TLS options reject
/// each other in 0.6.0.) Runs in suite 2, with the librdkafka that speaks to tansu.
@Suite("Tansu TLS", .serialized, .enabled(if: TestBroker.tansuBootstrap != nil, "set AUDIT_SENTINEL_TANSU_BOOTSTRAP (make test)"))
final class TansuTLSTests {
    let directory: URL
    var processes: [Process] = []
    var tlsPort: Int = 0
    var wrongHostPort: Int = 0

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("tls-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try makeCertificates()
        let plainPort = try freePort()
        tlsPort = try freePort()
        wrongHostPort = try freePort()
        let tansu = packageRoot.appendingPathComponent(".build-librdkafka/tansu").path
        try start(tansu, ["broker", "--listener-url", "tcp://127.0.0.1:\(plainPort)",
                          "--advertised-listener-url", "tcp://localhost:\(tlsPort)", "--storage-engine", "memory://tansu/"], log: "tansu.log")
        for (port, certificate) in [(tlsPort, "server"), (wrongHostPort, "wrong-host")] {
            try start("/usr/bin/socat", [
                "OPENSSL-LISTEN:\(port),bind=127.0.0.1,reuseaddr,fork,verify=0,cert=\(path(certificate + ".pem")),key=\(path(certificate + ".key"))",
                "TCP:127.0.0.1:\(plainPort)",
            ], log: "socat-\(certificate).log")
        }
        for port in [plainPort, tlsPort, wrongHostPort] { try waitForListener(port) }
    }

    deinit {
        // SIGKILL: children of the test process inherit its blocked SIGTERM.
        for process in processes where process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }

    func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    /// A test CA, a server certificate for `localhost` signed by it, one for another host name signed by
    /// it, and an unrelated CA.
    func makeCertificates() throws {
        try run("/usr/bin/openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Audit Sentinel test CA",
                                     "-keyout", path("ca.key"), "-out", path("ca.pem")])
        try run("/usr/bin/openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Unrelated CA",
                                     "-keyout", path("other-ca.key"), "-out", path("other-ca.pem")])
        for (name, host) in [("server", "localhost"), ("wrong-host", "wrong.example")] {
            try run("/usr/bin/openssl", ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=\(host)",
                                         "-keyout", path(name + ".key"), "-out", path(name + ".csr")])
            try "subjectAltName=DNS:\(host)\n".write(toFile: path(name + ".ext"), atomically: true, encoding: .utf8)
            try run("/usr/bin/openssl", ["x509", "-req", "-in", path(name + ".csr"), "-CA", path("ca.pem"), "-CAkey", path("ca.key"),
                                         "-CAcreateserial", "-days", "2", "-extfile", path(name + ".ext"), "-out", path(name + ".pem")])
        }
    }

    func run(_ executable: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw TestFailure("\(executable) \(arguments.joined(separator: " ")) failed") }
    }

    func start(_ executable: String, _ arguments: [String], log: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        FileManager.default.createFile(atPath: path(log), contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path(log)))
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        processes.append(process)
    }

    func waitForListener(_ port: Int) throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if canConnect(port) { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw TestFailure("nothing listens on 127.0.0.1:\(port)")
    }

    func configuration(port: Int, ca: String, _ extra: [String: String] = [:]) -> KafkaConfiguration {
        KafkaConfiguration([
            "bootstrap.servers": "localhost:\(port)",
            "broker.address.family": "v4",
            "security.protocol": "ssl",
            "ssl.ca.location": path(ca),
            "topic.metadata.refresh.interval.ms": "1000",
        ]).merging(extra)
    }

    @Test func recordsRoundTripOverTLSVerifiedAgainstTheTestCA() throws {
        let topic = uniqueName("tls")
        let admin = try KafkaAdmin(configuration: configuration(port: tlsPort, ca: "ca.pem"), logger: quietLogger)
        try admin.createTopics([NewTopic(name: topic, partitions: 2, replicationFactor: 1)])

        let failures = Mutex(0)
        let producer = try KafkaProducer(configuration: configuration(port: tlsPort, ca: "ca.pem", ["linger.ms": "5"]), logger: quietLogger) { report in
            if !report.isSuccess { failures.withLock { $0 += 1 } }
        }
        for index in 0..<50 { try producer.send(ProducerMessage(topic: topic, key: "key-\(index % 5)", value: "secret-\(index)")) }
        try producer.flush(timeout: .seconds(30))
        #expect(failures.withLock { $0 } == 0)

        let consumer = try KafkaConsumer(configuration: configuration(port: tlsPort, ca: "ca.pem", [
            "group.id": uniqueName("tls-group"), "auto.offset.reset": "earliest", "enable.auto.commit": "false",
            "session.timeout.ms": "6000", "heartbeat.interval.ms": "500", "fetch.wait.max.ms": "100",
        ]), logger: quietLogger)
        try consumer.subscribe(topics: [topic])
        let received = try consume(consumer, until: { $0.count >= 50 })
        #expect(Set(received.map(\.value)) == Set((0..<50).map { "secret-\($0)" }))
        try consumer.close()

        // The port speaks only TLS: a plaintext client gets no answer there.
        let plaintext = try KafkaAdmin(configuration: KafkaConfiguration(["bootstrap.servers": "localhost:\(tlsPort)", "broker.address.family": "v4"]), logger: quietLogger)
        #expect(throws: KafkaError.self) { try plaintext.metadata(timeout: .seconds(3)) }
    }

    @Test(arguments: [("other-ca.pem", "tls"), ("ca.pem", "wrong-host")])
    func anUntrustedCertificateOrAWrongHostNameFailsWithAClearError(ca: String, endpoint: String) throws {
        let port = endpoint == "tls" ? tlsPort : wrongHostPort
        let log = LogCapture()
        let admin = try KafkaAdmin(configuration: configuration(port: port, ca: ca), logger: log.logger)
        #expect(throws: KafkaError.self) { try admin.metadata(timeout: .seconds(5)) }
        // librdkafka's reason names the failed check; we surface it in the log at error level.
        let messages = log.messages.joined(separator: "\n")
        #expect(messages.contains("SSL handshake failed"), "\(messages)")
        if endpoint == "wrong-host" {
            #expect(messages.contains("does not name the host localhost (host name mismatch"), "\(messages)")
        } else {
            #expect(messages.contains("was not issued by a CA in ssl.ca.location"), "\(messages)")
        }
    }
}

/// Collects every log message at warning level and above.
final class LogCapture: Sendable {
    private let storage = Mutex<[String]>([])
    var messages: [String] { storage.withLock { $0 } }

    var logger: Logger {
        Logger(label: "capture") { _ in Handler(capture: self) }
    }

    struct Handler: LogHandler {
        let capture: LogCapture
        var logLevel: Logger.Level = .warning
        var metadata: Logger.Metadata = [:]
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            capture.storage.withLock { $0.append("\(event.level): \(event.message)") }
        }
    }
}

func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw TestFailure("cannot find a free port") }
    return Int(UInt16(bigEndian: address.sin_port))
}

func canConnect(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}


struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
