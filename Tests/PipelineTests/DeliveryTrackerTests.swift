// The record collector's ordering of changelog writes and offset commits across failed deliveries.
import Kafka
@testable import Pipeline
import Testing

@Suite struct DeliveryTrackerTests {
    func output(_ topic: String, _ key: String) -> OutputRecord {
        OutputRecord(topic: topic, partition: 0, key: Array(key.utf8), value: Array("v".utf8), lastWriteWins: true)
    }

    func keys(_ outputs: [(UInt64, OutputRecord)]) -> [String] { outputs.map { String(decoding: $0.1.key ?? [], as: UTF8.self) } }

    /// A batch's changelog records (a window, then the store's position) fail and are sent again, to the
    /// end of their partition. The next batch's position record, which counts the first batch's matches
    /// as applied, must not be written before them: restored from a log holding it but not the window, a
    /// store would skip those matches as applied and lose the window. It goes out once the first batch's
    /// records are acknowledged, and offsets commit in batch order.
    @Test func aLaterBatchsChangelogWaitsForAnEarlierOneSentAgain() {
        let tracker = DeliveryTracker()
        let input = TopicPartition("audit", 0)
        let first = tracker.open(offsets: [input: 11], deferred: [output("state", "w|alice"), output("state", "p|")])
        let firstAlert = tracker.register(output("alerts", "alert-1"), batch: first)
        tracker.close(first)
        tracker.acknowledge(id: firstAlert, failed: false)
        let firstChangelog = tracker.releaseDeferred()
        #expect(keys(firstChangelog) == ["w|alice", "p|"])

        let second = tracker.open(offsets: [input: 21], deferred: [output("state", "p|")])
        let secondAlert = tracker.register(output("alerts", "alert-2"), batch: second)
        tracker.close(second)
        tracker.acknowledge(id: secondAlert, failed: false)
        // The partition fails from the window record on (an idempotent producer keeps its order).
        for (id, _) in firstChangelog { tracker.acknowledge(id: id, failed: true) }
        #expect(tracker.releaseDeferred().isEmpty, "the second batch's position record overtook the first batch's state")

        let resent = tracker.takeFailed()
        #expect(keys(resent) == ["w|alice", "p|"])
        #expect(tracker.releaseDeferred().isEmpty)
        #expect(tracker.takeCompleted().isEmpty)
        for (id, _) in resent { tracker.acknowledge(id: id, failed: false) }
        #expect(tracker.takeCompleted() == [input: 11])
        let secondChangelog = tracker.releaseDeferred()
        #expect(keys(secondChangelog) == ["p|"])
        #expect(tracker.takeCompleted().isEmpty)
        for (id, _) in secondChangelog { tracker.acknowledge(id: id, failed: false) }
        #expect(tracker.takeCompleted() == [input: 21])
        #expect(tracker.outstanding == 0)
    }
}
