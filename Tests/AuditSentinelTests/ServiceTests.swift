import AuditEvents
import Foundation
import Kafka
import Logging
import TestSupport
import Testing

@testable import audit_sentinel

/// `audit-sentinel run` as an operator runs it: a separate process against a broker (the mock cluster this
/// test hosts on a loopback port), its HTTP endpoint fetched over loopback, stopped by SIGTERM.
@Suite("run: service process, HTTP endpoint, graceful shutdown (mock cluster)", .serialized)
struct ServiceTests {
    static var binary: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("audit-sentinel")
    }

    /// A running `audit-sentinel run`.
    final class ServiceProcess: @unchecked Sendable {
        let process = Process()
        let port: Int
        let errorPath: String

        init(brokers: String, applicationID: String, extra: [String] = [], environment: [String: String] = [:]) throws {
            port = try freePort()
            errorPath = FileManager.default.temporaryDirectory.appendingPathComponent("sentinel-\(UUID().uuidString).log").path
            FileManager.default.createFile(atPath: errorPath, contents: nil)
            process.executableURL = ServiceTests.binary
            process.currentDirectoryURL = packageRoot
            process.arguments = ["run", "--brokers", brokers, "--application-id", applicationID, "--http-listen", "127.0.0.1:\(port)",
                                 "--log-format", "json",
                                 "--set", "kafka.consumer.session.timeout.ms=6000", "--set", "kafka.consumer.heartbeat.interval.ms=500",
                                 "--set", "kafka.consumer.fetch.wait.max.ms=50", "--set", "kafka.common.topic.metadata.refresh.interval.ms=1000",
                                 "--set", "processing.internal_partitions=2", "--set", "processing.create_topics=false", "--set", "shutdown.timeout=40s",
                                 "--set", "metrics.kafka_statistics_interval=1s"] + extra
            var inherited = ProcessInfo.processInfo.environment
            inherited.removeValue(forKey: "SWIFT_BACKTRACE")   // the service sets its own
            inherited.merge(environment) { $1 }
            process.environment = inherited
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle(forWritingAtPath: errorPath)
            try process.run()
        }

        var log: String { (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? "" }

        func get(_ path: String, method: String = "GET") throws -> (status: Int, body: String) {
            try httpRequest(port: port, "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        }

        /// A metric's value summed over its label sets.
        func metric(_ name: String) throws -> Double {
            try get("/metrics").body.split(separator: "\n")
                .filter { $0.hasPrefix(name + " ") || $0.hasPrefix(name + "{") }
                .compactMap { Double($0.split(separator: " ").last ?? "") }.reduce(0, +)
        }

        func waitFor(_ what: String, timeout: Duration = .seconds(60), _ condition: () throws -> Bool) throws {
            let deadline = ContinuousClock.now + timeout
            while ContinuousClock.now < deadline {
                if (try? condition()) == true { return }
                guard process.isRunning else { throw TestFailure("process exited while waiting for \(what):\n\(log)") }
                Thread.sleep(forTimeInterval: 0.2)
            }
            throw TestFailure("timed out waiting for \(what):\n\(log.suffix(4000))")
        }

        /// SIGTERM, then the exit status (nil if it did not exit in time).
        func terminate(timeout: Duration = .seconds(45)) -> Int32? {
            process.terminate()
            let deadline = ContinuousClock.now + timeout
            while process.isRunning, ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.1) }
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                return nil
            }
            return process.terminationStatus
        }
    }

    let input = "k8s-audit"
    let alertsTopic = "k8s-alerts"

    /// The process series read from /proc agree with what the test sees of its own process.
    @Test func processMetricsDescribeThisProcess() throws {
        let sample = try #require(ProcessSample.read())
        #expect(sample.residentBytes > 1_000_000 && sample.virtualBytes >= sample.residentBytes)
        #expect(sample.openFileDescriptors >= 3 && sample.maxFileDescriptors >= sample.openFileDescriptors)
        let now = Date().timeIntervalSince1970
        #expect(sample.startTimeSeconds <= now + 1 && sample.startTimeSeconds > now - 24 * 3600)
        #expect(sample.cpuSeconds > 0)
        let text = String(decoding: PipelineMetrics().exposition(), as: UTF8.self)
        #expect(text.contains("audit_sentinel_build_info{version=\"\(AuditSentinelVersion.current)\""))
        #expect(text.contains("process_cpu_seconds_total "))
    }

    /// A broker address where nothing listens: start-up names it once per interval (not once per retry),
    /// says what is wrong, and SIGTERM during start-up ends the process within two seconds, status 0.
    @Test func startUpAgainstAnUnreachableBrokerIsQuietAndStopsAtOnce() throws {
        let nowhere = "127.0.0.1:\(try freePort())"
        let service = try ServiceProcess(brokers: nowhere, applicationID: "unreachable")
        defer { if service.process.isRunning { kill(service.process.processIdentifier, SIGKILL) } }
        try service.waitFor("the first connection error") { service.log.contains("Connection refused") }
        // Not healthy before its loop turns: the compose healthcheck (and the startup probe) fail.
        let starting = try DeploymentFilesTests.runComposeHealthcheck(port: service.port)
        #expect(starting.status == 1 && starting.stderr.contains("answered 503"), "\(starting.stderr)")
        Thread.sleep(forTimeInterval: 4)  // librdkafka retries many times a second meanwhile
        let log = service.log
        let refused = log.split(separator: "\n").filter { $0.contains("Connection refused") }
        print("unreachable broker: \(refused.count) log lines in about 4 s")
        #expect(refused.count <= 3, "one line per message per interval, not per retry:\n\(refused.joined(separator: "\n"))")
        #expect(refused.first?.contains(nowhere) == true, "names the address")
        #expect(refused.first?.contains("check kafka.bootstrap_servers") == true)
        let asked = ContinuousClock.now
        let status = service.terminate(timeout: .seconds(10))
        let took = ContinuousClock.now - asked
        print("unreachable broker: SIGTERM during start-up exited in \(took)")
        #expect(status == 0)
        #expect(took < .seconds(2))
        #expect(service.log.contains("stop signal during start-up") && service.log.contains("\"audit_sentinel.signal\":\"SIG"))
    }

    /// Opens `count` connections to the endpoint that send nothing or half a request and then wait.
    func idleConnections(_ count: Int, port: Int) throws -> [Int32] {
        try (0..<count).map { index in
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = UInt16(port).bigEndian
            let connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            try #require(connected == 0)
            if index % 2 == 0 { _ = send(fd, "GET /healthz HTTP/1.1\r\nHo", 26, Int32(MSG_NOSIGNAL)) }
            return fd
        }
    }

    /// Denied service-account requests from `accounts` accounts, interleaved with ordinary traffic.
    func traffic(seed: UInt64, count: Int, accounts: Int) -> (events: [String], denied: Int) {
        var generator = SyntheticAuditTraffic(seed: seed, startMilliseconds: Int64(Date().timeIntervalSince1970 * 1000))
        var events: [String] = []
        var denied = 0
        for index in 0..<count {
            if index % 10 == 0 {
                events.append(generator.next(.deniedServiceAccount, user: "system:serviceaccount:team-\(index % accounts):worker").json)
                denied += 1
            } else {
                events.append(generator.next(generator.nextKind(deniedFraction: 0)).json)
            }
        }
        return (events, denied)
    }

    func produce(_ events: [String], to kafka: KafkaConfiguration) throws {
        let producer = try KafkaProducer(configuration: kafka.merging(["linger.ms": "5"]), logger: silent)
        for (index, event) in events.enumerated() {
            try producer.send(ProducerMessage(topic: input, key: "apiserver-\(index % 3)", value: event))
        }
        try producer.flush(timeout: .seconds(30))
    }

    @Test func theEndpointServesMetricsHealthAndReadinessOnlyAndAGracefulStopThenRestartLosesAndDuplicatesNothing() throws {
        let cluster = try MockCluster(brokers: 1, logger: silent)
        // Debian's librdkafka mock cluster does not implement CreateTopics: the topics are made here and the
        // service told not to create them (as on a cluster where applications may not).
        let ruleID = try #require(try loadRuleSet([packageRoot.appendingPathComponent("Config/rules").path]).rules.first).id
        try cluster.createTopic(input, partitions: 3)
        for (topic, partitions) in [("svc-\(ruleID)-matches", 2), ("svc-\(ruleID)-state", 2), ("\(input).dlq", 1), (alertsTopic, 3)] {
            try cluster.createTopic(topic, partitions: Int32(partitions))
        }
        let kafka = KafkaConfiguration(["bootstrap.servers": cluster.bootstrapServers])
        let accounts = 7
        let first = traffic(seed: 1, count: 1500, accounts: accounts)
        let second = traffic(seed: 2, count: 1500, accounts: accounts)
        try produce(first.events, to: kafka)

        let secret = "hunter2-never-shown"
        let environment = ["AUDIT_SENTINEL_KAFKA_COMMON_SASL_USERNAME": "sentinel", "AUDIT_SENTINEL_KAFKA_COMMON_SASL_PASSWORD": secret]
        let service = try ServiceProcess(brokers: cluster.bootstrapServers, applicationID: "svc", environment: environment)
        try service.waitFor("readiness") { try service.get("/readyz").status == 200 }
        #expect(try service.get("/healthz") == (200, "ok\n"))
        // Connections are served concurrently: 50 idle clients (a port scan, a stuck scraper; half of them
        // mid-request) do not delay a probe, which Kubernetes gives one second by default.
        let idle = try idleConnections(50, port: service.port)
        Thread.sleep(forTimeInterval: 0.2)
        var slowest: Duration = .zero
        for _ in 0..<5 {
            let asked = ContinuousClock.now
            #expect(try service.get("/healthz") == (200, "ok\n"))
            slowest = max(slowest, ContinuousClock.now - asked)
        }
        print("http endpoint: /healthz answered in at most \(slowest) with 50 idle connections open")
        #expect(slowest < .milliseconds(100))
        idle.forEach { close($0) }
        // The compose healthcheck passes against a healthy service.
        let healthy = try DeploymentFilesTests.runComposeHealthcheck(port: service.port)
        #expect(healthy.status == 0, "\(healthy.stderr)")
        try service.waitFor("the first half") { try service.metric("audit_sentinel_records_consumed_total") >= Double(first.events.count) }

        // The endpoint: Prometheus text with our metrics, HEAD, and nothing but its three paths. (Lag is
        // refreshed every second or two from fetch responses.)
        try service.waitFor("the lag gauge") { try service.get("/metrics").body.contains("audit_sentinel_consumer_lag{") }
        // Matches reach the aggregate stage through the repartition topic, after the input: under load the
        // first alert can come seconds after the last input record.
        try service.waitFor("the first alert") { try service.metric("audit_sentinel_alerts_total") >= 1 }
        #expect(try service.get("/readyz") == (200, "ready\n"))
        // librdkafka's statistics (every second here) give the brokers' round trips and the producer's queue.
        try service.waitFor("librdkafka's statistics") { try service.get("/metrics").body.contains("audit_sentinel_kafka_broker_rtt_average_seconds{") }
        // Lag of every assigned partition: the 3 input partitions and the 2 of the internal matches topic.
        try service.waitFor("lag of every partition") {
            try service.get("/metrics").body.split(separator: "\n").filter { $0.hasPrefix("audit_sentinel_consumer_lag{") }.count == 5
        }
        let metrics = try service.get("/metrics")
        #expect(metrics.status == 200)
        // Series known at start are there at zero; the state is a one-hot set; the monitoring files' metrics exist.
        for line in ["audit_sentinel_decode_errors_total{reason=\"invalid_utf8\"} 0", "audit_sentinel_state{state=\"running\"} 1.0",
                     "audit_sentinel_state{state=\"restoring\"} 0.0", "audit_sentinel_restore_failures_total 0", "audit_sentinel_commits_total{result=\"failed\"} 0"] {
            #expect(metrics.body.contains(line + "\n"), "missing \(line)")
        }
        #expect(try service.metric("audit_sentinel_commits_total{result=\"committed\"}") >= 1)
        #expect(try service.metric("audit_sentinel_rebalance_duration_seconds_count") >= 1)
        #expect(try service.metric("audit_sentinel_commit_latency_seconds_count") >= 1)
        try DeploymentFilesTests.checkMonitoring(againstLiveMetrics: metrics.body)
        for name in ["audit_sentinel_records_consumed_total", "audit_sentinel_matches_total{rule_id=", "audit_sentinel_alerts_total{",
                     "audit_sentinel_open_windows", "audit_sentinel_ready 1", "audit_sentinel_alert_latency_seconds_bucket",
                     "audit_sentinel_consumer_lag{", "# TYPE audit_sentinel_records_consumed_total counter", "audit_sentinel_polls_total{batch=\"full\"}",
                     "audit_sentinel_build_info{", "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                     "process_max_fds", "process_start_time_seconds", "# TYPE process_cpu_seconds_total counter"] {
            #expect(metrics.body.contains(name), "missing \(name)")
        }
        #expect(try service.get("/metrics", method: "HEAD").body.isEmpty)
        #expect(try service.get("/etc/passwd").status == 404)
        #expect(try service.get("/../etc/passwd").status == 404, "dot segments are resolved, never escaping the three paths")
        #expect(try service.get("/metrics", method: "POST").status == 405)
        let huge = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Padding: \(String(repeating: "a", count: 10_000))\r\n\r\n"
        #expect(try httpRequest(port: service.port, huge).status == 431)

        // Mid-stream: the second half arrives, and SIGTERM comes while it is being processed.
        try produce(second.events, to: kafka)
        try service.waitFor("the second half to start") { try service.metric("audit_sentinel_records_consumed_total") > Double(first.events.count) }
        #expect(service.terminate() == 0)
        let stopped = try DeploymentFilesTests.runComposeHealthcheck(port: service.port)
        #expect(stopped.status == 1 && stopped.stderr.contains("Connection refused"), "\(stopped.stderr)")
        let firstLog = service.log
        #expect(firstLog.contains("stopping: finishing in-flight records"))
        #expect(!firstLog.contains(secret))
        #expect(!metrics.body.contains(secret))
        // ECS JSON lines, one object each, values in fields (never only in the message).
        for line in firstLog.split(separator: "\n") {
            let object = try? JSONValue.parse(Array(line.utf8)).objectValue
            #expect(object != nil, "not a JSON log line: \(line)")
            #expect(object?["@timestamp"]?.stringValue?.hasSuffix("Z") == true && object?["log.level"] != nil && object?["message"] != nil
                    && object?["ecs.version"]?.stringValue == "8.11.0" && object?["service.name"]?.stringValue == "audit-sentinel", "\(line)")
        }
        let rebalance = firstLog.split(separator: "\n").compactMap { try? JSONValue.parse(Array($0.utf8)).objectValue }
            .first { $0["message"]?.stringValue == "rebalance complete" }
        #expect(rebalance?["audit_sentinel.duration_ms"]?.stringValue.flatMap { Int($0) } != nil, "the rebalance's duration as a field")
        #expect(rebalance?["audit_sentinel.assigned_partitions"] != nil)

        // Restart: it resumes after the committed offsets and the restored state.
        let restarted = try ServiceProcess(brokers: cluster.bootstrapServers, applicationID: "svc")
        try restarted.waitFor("readiness after the restart") { try restarted.get("/readyz").status == 200 }
        let total = first.events.count + second.events.count
        try restarted.waitFor("the rest") {
            let consumer = try KafkaConsumer(configuration: kafka.merging(["group.id": "svc"]), logger: silent)
            defer { try? consumer.close() }
            let committed = try consumer.committed((0..<3).map { TopicPartition(input, Int32($0)) })
            return committed.reduce(0) { $0 + max(0, $1.offset) } == Int64(total)
        }
        // The input committed is not the end: its matches are aggregated from the repartition topic after it.
        func isNew(_ record: (key: String, value: [UInt8], headers: [KafkaHeader])) -> Bool {
            record.headers.contains { $0.name == "alert.kind" && $0.value.map { String(decoding: $0, as: UTF8.self) } == "new" }
        }
        try restarted.waitFor("every account's alert") { try readTopic(alertsTopic, kafka: kafka).filter(isNew).count >= accounts }
        let restartStatus = restarted.terminate()
        #expect(restartStatus == 0, "\(restarted.log.suffix(3000))")

        // Every denied event became exactly one match, read from its input position once: nothing lost,
        // nothing processed twice. One new alert per account, never repeated.
        let matches = try readTopic("svc-\(ruleID)-matches", kafka: kafka)
        let positions = matches.compactMap { record -> String? in
            guard let object = try? JSONValue.parse(record.value).objectValue, case .object(let source)? = object["source"] else { return nil }
            return "\(source["partition"].map { "\($0)" } ?? "")/\(source["offset"].map { "\($0)" } ?? "")/\(object["sequence"].map { "\($0)" } ?? "")"
        }
        #expect(matches.count == first.denied + second.denied)
        #expect(Set(positions).count == positions.count)
        let alerts = try readTopic(alertsTopic, kafka: kafka)
        let newAlerts = alerts.filter { $0.headers.contains { $0.name == "alert.kind" && $0.value.map { String(decoding: $0, as: UTF8.self) } == "new" } }
        #expect(newAlerts.count == accounts)
        #expect(Set(newAlerts.map(\.key)).count == accounts)
    }

    /// A crash report (here forced with SIGSEGV) shows the stack, not registers or the memory they point
    /// at, where a secret could be.
    @Test func aCrashReportShowsNoRegistersMemoryOrSecrets() throws {
        let cluster = try MockCluster(brokers: 1, logger: silent)
        let ruleID = try #require(try loadRuleSet([packageRoot.appendingPathComponent("Config/rules").path]).rules.first).id
        for (topic, partitions) in [(input, 1), ("crash-\(ruleID)-matches", 2), ("crash-\(ruleID)-state", 2), ("\(input).dlq", 1), (alertsTopic, 3)] {
            try cluster.createTopic(topic, partitions: Int32(partitions))
        }
        let secret = "hunter2-in-a-crash"
        let service = try ServiceProcess(brokers: cluster.bootstrapServers, applicationID: "crash",
                                         environment: ["AUDIT_SENTINEL_KAFKA_COMMON_SASL_USERNAME": "sentinel", "AUDIT_SENTINEL_KAFKA_COMMON_SASL_PASSWORD": secret])
        try service.waitFor("readiness") { try service.get("/readyz").status == 200 }
        // Sent from outside, the signal gets the full crash report; the runtime then returns to the program
        // (a real fault would fault again and end it).
        kill(service.process.processIdentifier, SIGSEGV)
        try service.waitFor("the crash report") { service.log.contains("Backtrace took") }
        // The service group turns the first stop signal into a graceful shutdown; a second one (here a
        // SIGINT right after the SIGTERM: different signals never merge) means now: exit 130.
        kill(service.process.processIdentifier, SIGTERM)
        kill(service.process.processIdentifier, SIGINT)
        let deadline = ContinuousClock.now + .seconds(10)
        while service.process.isRunning, ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.05) }
        #expect(!service.process.isRunning && service.process.terminationStatus == 130, "\(service.log.suffix(2000))")
        #expect(service.log.contains("second stop signal, exiting now"))
        _ = service.terminate()
        let log = service.log
        #expect(log.contains("Program crashed"), "no crash report at all: \(log.suffix(2000))")
        #expect(log.contains("Thread 0"), "the report shows the stack")
        #expect(!log.contains("Registers:"), "\(log.suffix(3000))")
        #expect(!log.contains("Images ("))
        #expect(!log.contains(secret))
    }

    @Test func invalidConfigurationExitsWithOneLineNamingTheKey() throws {
        let process = Process()
        process.executableURL = Self.binary
        process.currentDirectoryURL = packageRoot
        process.arguments = ["run", "--brokers", "127.0.0.1:1", "--set", "processing.max_batch=lots"]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 2)
        #expect(text == "configuration: processing.max_batch: expected an integer, got \"lots\" (from --set)\n")
    }
}

/// Start-up against tansu with a librdkafka too old to read its answers: Debian's 2.0.2 (the tansu suite
/// itself runs with a newer one, see README) cannot parse tansu's ApiVersions response ("Read underflow").
@Suite(
    "Tansu: service start-up with a librdkafka that cannot speak to the broker", .serialized,
    .enabled(if: ProcessInfo.processInfo.environment["AUDIT_SENTINEL_TANSU_BOOTSTRAP"] != nil, "AUDIT_SENTINEL_TANSU_BOOTSTRAP is not set: run `make test`"))
struct TansuServiceStartUpTests {
    @Test func aProtocolMismatchIsNamedWithItsRemedyAndAStopStillExitsAtOnce() throws {
        let bootstrap = try #require(ProcessInfo.processInfo.environment["AUDIT_SENTINEL_TANSU_BOOTSTRAP"])
        // Without the suite's LD_LIBRARY_PATH the service loads the system's librdkafka (Debian's 2.0.2).
        let service = try ServiceTests.ServiceProcess(brokers: bootstrap, applicationID: "mismatch", environment: ["LD_LIBRARY_PATH": ""])
        defer { if service.process.isRunning { kill(service.process.processIdentifier, SIGKILL) } }
        try service.waitFor("the mismatch to be named", timeout: .seconds(45)) { service.log.contains("a protocol version mismatch") }
        let line = try #require(service.log.split(separator: "\n").first { $0.contains("a protocol version mismatch") })
        print("protocol mismatch: \(line)")
        #expect(line.contains("cannot parse") && line.contains("librdkafka ≥ 2.2"), "\(line)")
        #expect(line.contains("2.0."), "names the librdkafka at run time: \(line)")
        #expect(try service.get("/readyz").status == 503)
        #expect(service.terminate(timeout: .seconds(10)) == 0)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

let silent: Logger = {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    return logger
}()

func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// One raw HTTP/1.1 exchange over loopback: status and body.
func httpRequest(port: Int, _ request: String) throws -> (status: Int, body: String) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    let connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    guard connected == 0 else { throw TestFailure("cannot connect to 127.0.0.1:\(port)") }
    let bytes = Array(request.utf8)
    _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    var response: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if count <= 0 { break }
        response += buffer[0..<count]
    }
    let text = String(decoding: response, as: UTF8.self)
    guard let headerEnd = text.range(of: "\r\n\r\n"), let status = Int(text.split(separator: " ").dropFirst().first ?? "") else {
        throw TestFailure("malformed response: \(text.prefix(200))")
    }
    return (status, String(text[headerEnd.upperBound...]))
}

/// Every record of a topic, read to the end of each partition.
func readTopic(_ topic: String, kafka: KafkaConfiguration, timeout: Duration = .seconds(20)) throws -> [(key: String, value: [UInt8], headers: [KafkaHeader])] {
    let consumer = try KafkaConsumer(
        configuration: kafka.merging(["group.id": "reader-\(UUID().uuidString)", "auto.offset.reset": "earliest", "enable.partition.eof": "true"]),
        logger: silent)
    defer { try? consumer.close() }
    let partitions = try #require(try consumer.metadata(topic: topic).topic(topic)).partitions.map(\.id)
    try consumer.assign(partitions.map { TopicPartitionOffset(topic, $0, offset: KafkaOffset.beginning) })
    var records: [(String, [UInt8], [KafkaHeader])] = []
    var ended = Set<Int32>()
    let deadline = ContinuousClock.now + timeout
    while ended.count < partitions.count, ContinuousClock.now < deadline {
        try consumer.poll(timeout: .milliseconds(100)) { batch in
            for record in batch {
                ended.remove(record.partition)
                records.append((record.key.map { String(decoding: $0, as: UTF8.self) } ?? "", Array(record.payload), record.headers))
            }
            for case .partitionEOF(let partition, _) in batch.notices { ended.insert(partition.partition) }
        }
    }
    return records.map { (key: $0.0, value: $0.1, headers: $0.2) }
}
