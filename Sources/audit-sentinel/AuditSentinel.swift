import ArgumentParser
import Kafka

@main
struct AuditSentinel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit-sentinel",
        abstract: "Detects denied and suspicious Kubernetes API requests in audit logs streamed through Kafka.",
        discussion: """
            Exit codes: 0 success (for `match`: something matched), 1 nothing matched, 2 an error \
            (unreadable file, invalid rule or query, bad arguments).
            """,
        // `audit-sentinel --version` prints what `audit-sentinel version` prints.
        version: Version.text,
        subcommands: [Run.self, Demo.self, Generate.self, Replay.self, Match.self, CheckRule.self, Healthcheck.self, Version.self]
    )
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print Audit Sentinel's and librdkafka's versions.")

    /// Ours, and the librdkafka actually loaded (which may be newer than the headers we built against).
    static var text: String { "audit-sentinel \(AuditSentinelVersion.current)\nlibrdkafka \(librdkafkaVersion)" }

    func run() {
        print(Self.text)
    }
}

enum AuditSentinelVersion {
    static let current = "0.1.0"
}
