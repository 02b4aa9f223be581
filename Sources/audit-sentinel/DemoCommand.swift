import ArgumentParser
import AuditEvents
import Detection
import Foundation
import Kafka
import Logging
import Pipeline
import Synchronization

/// `audit-sentinel demo` (what `make demo` runs): the real pipeline on an in-process mock Kafka cluster, fed
/// by a simulated cluster's audit traffic, with alerts shown as they arrive.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the pipeline on an embedded Kafka mock cluster with simulated audit traffic and show the alerts.",
        discussion: """
            Starts librdkafka's mock cluster in-process, produces audit traffic from a simulated cluster \
            (normal workloads across namespaces; a stolen service-account token probing secrets and pods \
            across namespaces; a misconfigured operator denied every few seconds), runs the real pipeline \
            with the rules of Config/rules, and prints each alert and update as it is published. Windows \
            are shortened to 20 s (grace 2 s, idle timeout 3 s) so that updates show within a minute. \
            Ends by itself after --duration seconds, closing the windows still open.
            """)

    @Option(name: .long, help: "How long to run, in seconds.")
    var duration: Int = 45

    @Option(name: .long, help: "Audit events per second from the simulated cluster.")
    var rate: Int = 400

    @Flag(name: .long, help: "Print the raw alert documents (JSON lines) instead of the readable form.")
    var json = false

    @Option(name: .long, help: "Rule files or directories.")
    var rules: [String] = ["Config/rules"]

    @Option(name: .long, help: "Seed of the simulated traffic.")
    var seed: UInt64 = 42

    func run() throws {
        var logger = Logger(label: "audit-sentinel.demo")
        logger.logLevel = .critical
        let ruleSet = try loadRuleSet(rules)
        let style = TerminalStyle(enabled: isatty(STDOUT_FILENO) == 1 && !json)
        let cluster = try MockCluster(brokers: 1, logger: logger)
        let kafka = KafkaConfiguration(["bootstrap.servers": cluster.bootstrapServers, "topic.metadata.refresh.interval.ms": "1000"])
        let input = "k8s-audit"
        let alertsTopic = "k8s-alerts"
        try cluster.createTopic(input, partitions: 1)

        var configuration = PipelineConfiguration(applicationID: "audit-sentinel-demo", kafka: kafka, inputTopics: [input], alertsTopic: alertsTopic)
        configuration.defaultSuppression = DetectionRule.AlertSuppression(groupBy: ["kubernetes.audit.user.username"], durationMilliseconds: 20_000)
        configuration.suppressionOverrides = Dictionary(uniqueKeysWithValues: ruleSet.rules.map {
            ($0.id, DetectionRule.AlertSuppression(groupBy: $0.rule.alertSuppression?.groupBy ?? ["kubernetes.audit.user.username"], durationMilliseconds: 20_000))
        })
        configuration.graceMilliseconds = 2_000
        configuration.idleTimeoutMilliseconds = 3_000
        configuration.internalPartitions = 2
        configuration.consumerProperties = ["session.timeout.ms": "6000", "heartbeat.interval.ms": "500", "fetch.wait.max.ms": "50"]
        let runner = PipelineRunner(configuration: configuration, rules: ruleSet, provisioner: MockTopicProvisioner(cluster: cluster), logger: logger)

        let banner = style.bold("Audit Sentinel demo") + " — embedded Kafka mock cluster at \(cluster.bootstrapServers), \(ruleSet.rules.count) rule(s), \(rate) events/s for \(duration) s"
        // With --json, standard output carries the alert documents only.
        if json { printError(banner) } else { print(banner) }
        try runner.start()
        let generator = TrafficGenerator(kafka: kafka, topic: input, rate: rate, seed: seed, logger: logger)
        generator.start()

        let reader = try KafkaConsumer(configuration: kafka.merging(["group.id": "audit-sentinel-demo-viewer", "auto.offset.reset": "earliest"]), logger: logger)
        try reader.assign((0..<3).map { TopicPartitionOffset(alertsTopic, Int32($0), offset: KafkaOffset.beginning) })
        var summary: [String: (alerts: Int, suppressed: Int, last: String)] = [:]
        var alertRecordsShown = 0
        let started = ContinuousClock.now
        var lastStatus = ContinuousClock.now
        func showAlerts() throws {
            try reader.poll(timeout: .zero) { batch in
                for record in batch {
                    alertRecordsShown += 1
                    let bytes = Array(record.payload)
                    if json {
                        print(String(decoding: bytes, as: UTF8.self))
                        continue
                    }
                    guard let document = try? JSONValue.parse(bytes).objectValue else { continue }
                    let kind = record.header("alert.kind").map { String(decoding: $0, as: UTF8.self) } ?? "new"
                    print(style.describe(document, kind: kind))
                    let user = document[path: "user.name"]?.stringValue ?? "?"
                    var entry = summary[user] ?? (0, 0, "")
                    if kind == "new" { entry.alerts += 1 }
                    if case .number(let count)? = document[path: "kibana.alert.suppression.docs_count"], kind == "update" {
                        entry.suppressed += Int(count.intValue ?? 0)
                    }
                    entry.last = document[path: "kibana.alert.rule.name"]?.stringValue ?? ""
                    summary[user] = entry
                }
            }
        }
        while started.duration(to: .now) < .seconds(duration) {
            try runner.runOnce()
            try showAlerts()
            if style.enabled, lastStatus.duration(to: .now) >= .seconds(1) {
                lastStatus = .now
                let counters = runner.snapshot()
                let elapsed = max(1, Double(started.duration(to: .now).components.seconds))
                let status = String(format: "  %.0f events/s · %d events · %d matches · %d alerts · %d updates · %d open windows ",
                                    Double(counters.eventsDecoded + counters.prefilterRejected) / elapsed,
                                    counters.recordsConsumed, counters.matches.values.reduce(0, +), counters.alertsNew, counters.alertsUpdated,
                                    runner.openWindows)
                FileHandle.standardError.write(Data(("\r" + style.dim(status)).utf8))
            }
        }
        generator.stop()
        // Process everything produced and every match it repartitioned (not a fixed time: a loaded machine
        // takes longer), then close the windows still open and show every alert published.
        let drainUntil = ContinuousClock.now + .seconds(60)
        func drained() -> Bool {
            let counters = runner.snapshot()
            return counters.inputRecords >= generator.produced && counters.matchesAggregated >= counters.matches.values.reduce(0, +)
        }
        repeat {
            try runner.runOnce()
            try showAlerts()
        } while !drained() && ContinuousClock.now < drainUntil
        try runner.flushOpenWindows()
        let published = { let counters = runner.snapshot(); return counters.alertsNew + counters.alertsUpdated }()
        let showUntil = ContinuousClock.now + .seconds(30)
        while alertRecordsShown < published && ContinuousClock.now < showUntil {
            try showAlerts()
            Thread.sleep(forTimeInterval: 0.01)
        }
        let counters = runner.snapshot()
        try runner.stop()
        try reader.close()
        if style.enabled { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        if !json {
            print("")
            print(style.bold("Summary") + " — \(generator.produced) events produced, \(counters.recordsConsumed) records consumed, "
                  + "\(counters.matches.values.reduce(0, +)) matches, \(counters.alertsNew) alerts, \(counters.alertsUpdated) updates, "
                  + "\(counters.deadLettered) dead-lettered")
            let width = max(40, summary.keys.map(\.count).max() ?? 0)
            print("  " + "account".padding(toLength: width, withPad: " ", startingAt: 0) + "  alerts  suppressed")
            for (user, entry) in summary.sorted(by: { $0.value.suppressed > $1.value.suppressed }) {
                print("  " + user.padding(toLength: width, withPad: " ", startingAt: 0)
                      + String(format: "  %6d  %10d", entry.alerts, entry.suppressed))
            }
        }
    }
}

/// The simulated cluster: produces audit events in real time on its own thread.
final class TrafficGenerator: @unchecked Sendable {
    let kafka: KafkaConfiguration
    let topic: String
    let rate: Int
    let seed: UInt64
    let logger: Logger
    private let running = Atomic<Bool>(false)
    private let count = Atomic<Int>(0)
    private let finished = DispatchSemaphore(value: 0)

    init(kafka: KafkaConfiguration, topic: String, rate: Int, seed: UInt64, logger: Logger) {
        self.kafka = kafka
        self.topic = topic
        self.rate = max(1, rate)
        self.seed = seed
        self.logger = logger
    }

    var produced: Int { count.load(ordering: .relaxed) }

    func start() {
        running.store(true, ordering: .releasing)
        let thread = Thread { [self] in
            defer { finished.signal() }
            guard let producer = try? KafkaProducer(configuration: kafka.merging(["linger.ms": "20"]), logger: logger) else { return }
            var traffic = SyntheticAuditTraffic(seed: seed)
            let start = Date()
            var sent = 0
            let thief = "system:serviceaccount:payments:checkout-api"
            let stolenFrom = ["kube-system", "vault", "default", "payments", "monitoring", "argocd"]
            let operatorAccount = "system:serviceaccount:monitoring:node-exporter-operator"
            var nextOperatorDenial = 0.0
            while running.load(ordering: .acquiring) {
                let elapsed = Date().timeIntervalSince(start)
                let due = Int(elapsed * Double(rate))
                while sent < due {
                    traffic.clock = Int64(Date().timeIntervalSince1970 * 1000)
                    let seconds = Date().timeIntervalSince(start)
                    let event: String
                    if seconds >= 5, seconds < 35, sent % max(1, rate / 2) == 0 {
                        // The stolen token, probing secrets and pods namespace by namespace.
                        let probe = sent / max(1, rate / 2)
                        event = traffic.next(.deniedServiceAccount, user: thief, namespace: stolenFrom[probe % stolenFrom.count],
                                             verb: probe % 2 == 0 ? "list" : "get", resource: probe % 3 == 0 ? "pods" : "secrets",
                                             sourceIP: "203.0.113.66", userAgent: "python-requests/2.32.3").json
                    } else if seconds >= nextOperatorDenial {
                        nextOperatorDenial = seconds + 4
                        event = traffic.next(.deniedServiceAccount, user: operatorAccount, namespace: "monitoring", verb: "list", resource: "nodes",
                                             userAgent: "node-exporter-operator/0.9.1").json
                    } else {
                        event = traffic.next(traffic.nextKind(deniedFraction: 0)).json
                    }
                    _ = try? producer.send(ProducerMessage(topic: topic, key: "apiserver-\(sent % 3)", value: event))
                    sent += 1
                    count.store(sent, ordering: .relaxed)
                }
                Thread.sleep(forTimeInterval: 0.01)
            }
            try? producer.flush(timeout: .seconds(5))
        }
        thread.name = "demo-traffic"
        thread.start()
    }

    func stop() {
        if running.exchange(false, ordering: .acquiringAndReleasing) { finished.wait() }
    }
}

/// ANSI colours when writing to a terminal, plain text otherwise.
struct TerminalStyle {
    let enabled: Bool

    func paint(_ text: String, _ code: String) -> String { enabled ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text }
    func bold(_ text: String) -> String { paint(text, "1") }
    func dim(_ text: String) -> String { paint(text, "2") }

    /// One readable line (two for updates) per alert document.
    func describe(_ document: JSONObject, kind: String) -> String {
        let time = document[path: "kibana.alert.original_time"]?.stringValue.map { String($0.dropFirst(11).prefix(8)) } ?? ""
        let severity = document[path: "kibana.alert.severity"]?.stringValue ?? ""
        let rule = document[path: "kibana.alert.rule.name"]?.stringValue ?? ""
        let user = document[path: "user.name"]?.stringValue ?? "?"
        let verb = document[path: "event.action"]?.stringValue ?? ""
        let resource = document[path: "orchestrator.resource.type"]?.stringValue ?? ""
        let namespace = document[path: "orchestrator.namespace"]?.stringValue ?? ""
        let ip = document[path: "source.ip"]?.arrayValue?.first?.stringValue ?? ""
        let tag = kind == "update" ? paint(" UPDATE ", "30;43") : paint("  NEW   ", "37;41")
        var line = "\(tag) \(time) \(paint(severity, "33")) \(bold(rule)) — \(paint(user, "36")) \(verb) \(resource) in \(namespace) from \(ip)"
        if kind == "update", case .number(let count)? = document[path: "kibana.alert.suppression.docs_count"] {
            let summary = document[path: "kibana.alert.suppression.summary"]
            func list(_ key: String) -> String { summary?.objectValue?[key]?.arrayValue?.compactMap(\.stringValue).joined(separator: ",") ?? "" }
            line += "\n         " + dim("+\(count) suppressed · verbs \(list("verbs")) · resources \(list("resources")) · namespaces \(list("namespaces"))")
        }
        return line
    }
}

/// `audit-sentinel generate`: the demo's simulated cluster against real brokers (the compose file's `demo`
/// profile; load for trying a deployment).
struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Produce simulated Kubernetes audit traffic (the demo's cluster) to a Kafka topic, or write a seeded log file.",
        discussion: """
            With --output, writes --count events (NDJSON, 2 ms apart in event time, seeded) to a file instead: the             reproducible input of the crash test and of `replay`.
            """)

    @Option(name: .long, help: "Broker list.")
    var brokers: String?

    @Option(name: .long, help: "Write this many events to --output instead of producing in real time.")
    var count: Int = 10_000

    @Option(name: .long, help: "NDJSON file to write (offline mode).")
    var output: String?

    @Option(name: .customLong("denied-fraction"), help: "Offline mode: fraction of denied service-account requests.")
    var deniedFraction: Double = 0.02

    @Option(name: .long, help: "Topic to produce to.")
    var topic: String = "k8s-audit"

    @Option(name: .long, help: "Audit events per second.")
    var rate: Int = 200

    @Option(name: .long, help: "Seconds to run; 0 runs until SIGTERM or SIGINT.")
    var duration: Int = 0

    @Option(name: .long, help: "Seed of the simulated traffic.")
    var seed: UInt64 = 42

    @Option(name: .customLong("property"), help: ArgumentHelp("librdkafka producer property (repeatable).", valueName: "key=value"))
    var properties: [String] = []

    func run() throws {
        if let output {
            var traffic = SyntheticAuditTraffic(seed: seed)
            var text = ""
            for _ in 0..<count { text += traffic.next(traffic.nextKind(deniedFraction: deniedFraction)).json + "\n" }
            guard FileManager.default.createFile(atPath: output, contents: Data(text.utf8)) else {
                printError("cannot write \(output)")
                throw ExitCode(2)
            }
            return
        }
        guard let brokers else {
            printError("--brokers is required (or --output for a file)")
            throw ExitCode(2)
        }
        var kafka = ["bootstrap.servers": brokers]
        for property in properties {
            guard let equals = property.firstIndex(of: "=") else {
                printError("--property takes key=value, got \(property)")
                throw ExitCode(2)
            }
            kafka[String(property[..<equals])] = String(property[property.index(after: equals)...])
        }
        var logger = Logger(label: "audit-sentinel.generate")
        logger.logLevel = .warning
        let generator = TrafficGenerator(kafka: KafkaConfiguration(kafka), topic: topic, rate: rate, seed: seed, logger: logger)
        StopSignals.install()
        printError("generating \(rate) audit events/s into \(topic) at \(brokers)")
        generator.start()
        let end = duration > 0 ? ContinuousClock.now + .seconds(duration) : nil
        while !StopSignals.requested, end.map({ ContinuousClock.now < $0 }) ?? true { Thread.sleep(forTimeInterval: 0.1) }
        generator.stop()
        printError("produced \(generator.produced) events")
    }
}
