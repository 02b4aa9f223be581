import ArgumentParser
import Kafka

@main
struct AuditSentinel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit-sentinel",
        abstract: "Detects denied and suspicious Kubernetes API requests in audit logs streamed through Kafka.",
        subcommands: [Version.self]
    )
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print Audit Sentinel's and librdkafka's versions.")

    func run() {
        print("audit-sentinel \(AuditSentinelVersion.current)")
        print("librdkafka \(librdkafkaVersion)")
    }
}

enum AuditSentinelVersion {
    static let current = "0.1.0"
}
