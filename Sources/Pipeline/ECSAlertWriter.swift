// The ECS alert of a query or new_terms rule written as bytes: the source document's members spliced, the alert's own written in key order.
import AuditEvents

extension AlertDocumentBuilder {
    /// The members an ECS alert writes over its source document's, in key order; `event`'s own; and the one
    /// `kibana.alert.original_event` adds when the source's event lacks it.
    private static let topLevelKeys: [StaticString] = ["@timestamp", "ecs", "event", "kibana"]
    private static let eventKeys: [StaticString] = ["ingested", "kind"]
    private static let ingestedKey: [StaticString] = ["ingested"]

    /// The same bytes as ``ecsDocument(for:)`` serialized with sorted keys, with no tree: the source
    /// document's members (canonical and in key order already) are copied, its `event` object's members
    /// too, and the alert's own members are written in the order sorted keys put them. Every match that
    /// opens a window, and every update, is published through here.
    /// - Parameter alertID: ``alertID(for:)`` of the action's window, formed once for the record's key and
    ///   its document.
    func splicedECSDocument(for action: AlertAction, source: CanonicalDocument, alertID: String) -> [UInt8] {
        let window = action.window
        let members = source.memberSpans
        var sourceEvent: [CanonicalDocument.Member]?
        var sourceTimestamp: Range<Int>?
        for member in members {
            if source.key(of: member, is: "event") {
                // Canonical too: its members in key order, as the document's own are.
                sourceEvent = source.objectMemberSpans(ofValueAt: member.value)
            } else if source.key(of: member, is: "@timestamp") {
                sourceTimestamp = member.value
            }
        }
        var stamp = JSONObjectWriter(capacity: 26)
        stamp.timestamp(window.first.eventTime)
        let ingested = stamp.finish()
        let sourceIP = source.firstString(Self.sourceIP), userName = source.firstString(Self.userName)

        var out = JSONObjectWriter(capacity: source.bytes.count * 2 + ruleBytes.count + 2048)
        // The document's top level: the source's members, the alert's four in their places (theirs win).
        out.openObject()
        var topLevel = MemberMerge(members, own: Self.topLevelKeys)
        while let own = out.nextOwnMember(&topLevel, of: source) {
            switch own {
            case 0: out.raw(ingested)
            case 1:
                out.openObject()
                out.memberKey("version")
                out.string(ecsVersion)
                out.closeObject()
            case 2:
                out.openObject()
                var event = MemberMerge(sourceEvent ?? [], own: Self.eventKeys)
                while let own = out.nextOwnMember(&event, of: source) {
                    if own == 0 { out.raw(ingested) } else { out.raw(#""signal""#) }
                }
                out.closeObject()
            default:
                out.openObject()
                out.memberKey("alert")
                out.openObject()
                writeAlertMembers(action, alertID: alertID, source: source, sourceEvent: sourceEvent, sourceTimestamp: sourceTimestamp,
                                  ingested: ingested, sourceIP: sourceIP, userName: userName, to: &out)
                out.closeObject()
                out.memberKey("space_ids")
                out.raw(#"["default"]"#)
                out.closeObject()
            }
        }
        out.closeObject()
        return out.finish()
    }

    /// `kibana.alert`'s members, in key order.
    private func writeAlertMembers(_ action: AlertAction, alertID: String, source: CanonicalDocument, sourceEvent: [CanonicalDocument.Member]?,
                                   sourceTimestamp: Range<Int>?, ingested: [UInt8], sourceIP: String?, userName: String?,
                                   to out: inout JSONObjectWriter) {
        let window = action.window
        let origin = window.first.source
        out.member("ancestors") { out in
            out.raw("[")
            out.object { out in
                out.member("depth") { $0.raw("0") }
                out.member("id") { out in
                    // `topic/partition/offset`: the topic escaped as a string's text, the numbers need none.
                    out.raw("\"")
                    out.stringText(origin.topic)
                    out.raw("/", number: Int64(origin.partition))
                    out.raw("/", number: origin.offset)
                    out.raw("\"")
                }
                out.member("index") { $0.string(origin.topic) }
                out.member("offset") { $0.number(origin.offset) }
                out.member("partition") { $0.number(Int64(origin.partition)) }
                out.member("type") { $0.raw(#""event""#) }
            }
            out.raw("]")
        }
        out.member("depth") { $0.raw("1") }
        out.member("instance") { out in
            out.object { $0.member("id") { $0.string(UUIDv5.make(namespace: UUIDv5.alertNamespace, name: "instance|\(rule.ruleID)|\(window.groupKey)")) } }
        }
        if rule.type == .newTerms {
            out.member("new_terms") { $0.optionalStrings(window.groupValues) }
        }
        out.member("original_event") { out in
            // The source's event without `original`; Kibana's map requires `ingested`: the source's own, else ours.
            let event = sourceEvent ?? []
            out.openObject()
            var merge = MemberMerge(event, own: event.contains { source.key(of: $0, is: "ingested") } ? [] : Self.ingestedKey, dropping: "original")
            while out.nextOwnMember(&merge, of: source) != nil { out.raw(ingested) }
            out.closeObject()
        }
        out.member("original_time") { out in
            if let sourceTimestamp { out.raw(source.bytes[sourceTimestamp]) } else { out.timestamp(window.start) }
        }
        out.member("reason") { out in
            // Elastic's sentence (``reason(sourceIP:userName:)``), its pieces escaped as they are written.
            out.raw("\"")
            forEachReasonPiece(sourceIP: sourceIP, userName: userName) { out.stringText($0) }
            out.raw("\"")
        }
        out.member("risk_score") { $0.number(Int64(rule.riskScore)) }
        out.member("rule") { $0.raw(ruleBytes) }
        out.member("severity") { $0.string(rule.severity) }
        out.member("status") { $0.raw(#""active""#) }
        out.member("suppression") { out in
            out.object { out in
                out.member("docs_count") { $0.number(Int64(window.suppressed)) }
                out.member("end") { $0.timestamp(window.seen.last) }
                if action.late { out.member("late") { $0.raw("true") } }
                out.member("start") { $0.timestamp(window.seen.first) }
                if action.kind == .update { out.member("summary") { $0.summary(window.summary) } }
                out.member("terms") { out in
                    out.array(zip(groupByFields, window.groupValues)) { out, term in
                        out.object { out in
                            out.member("field") { $0.string(term.0) }
                            out.member("value") { out in
                                if let value = term.1 { out.array(CollectionOfOne(value)) { $0.string($1) } } else { out.raw("null") }
                            }
                        }
                    }
                }
                out.member("window") { out in
                    out.object { out in
                        out.member("end") { $0.timestamp(window.end) }
                        out.member("start") { $0.timestamp(window.start) }
                    }
                }
            }
        }
        out.member("uuid") { $0.string(alertID) }
        out.member("workflow_status") { $0.raw(#""open""#) }
    }
}
