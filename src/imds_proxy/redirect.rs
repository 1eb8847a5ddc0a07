//! `imds-proxy --install-redirect`: send the pod's TCP to 169.254.169.254:80 to the proxy.
//!
//! One nftables table of our own in the pod's network namespace, written over netlink in
//! one transaction, the equivalent of
//!
//! ```text
//! table ip secret_sidecar_imds {
//!     chain output {
//!         type nat hook output priority dstnat; policy accept;
//!         ip daddr 169.254.169.254 tcp dport 80 dnat to 127.0.0.1:8000
//!     }
//! }
//! ```
//!
//! Locally generated packets only (the output hook), so nothing that merely passes
//! through is touched; other addresses and ports of 169.254.169.254 are left alone. The
//! transaction adds the table, deletes it and adds it again with its chain and rule
//! (what `nft -f` files do), so running it twice leaves the same single rule, and no
//! other table, chain or rule is removed or changed. The kernel applies the whole batch
//! or nothing.
//!
//! Written with `netlink-packet-netfilter`'s nftables messages and `netlink-sys`'s socket
//! (both pure Rust, MIT): the distroless image has no `nft` or `iptables`, and libnftnl
//! (what `nft` and the `nftnl` crate use) is C under the GPL. The nat expression is not
//! one the crate models, so its attributes are written here from
//! `include/uapi/linux/netfilter/nf_tables.h`.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context as _, Result, anyhow, bail};
use netlink_packet_core::{
    DefaultNla, Emitable as _, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST, NetlinkMessage,
};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, Cmp, DataAttribute, Expressions, Hook, Immediate, InetHookNumber, Meta,
    MetaKey, NfTablesMessage, Operator, Payload, Register, RuleAttribute, RuleMessage,
    TableAttribute, TableMessage,
};
use netlink_packet_netfilter::nftables::{ChainMessage, ListAttribute};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_NETFILTER};
use tracing::info;

use crate::exit::Failure;

/// Our table; the only one this code ever writes or deletes.
pub const TABLE: &str = "secret_sidecar_imds";
const CHAIN: &str = "output";
const IMDS: [u8; 4] = [169, 254, 169, 254];
const IMDS_PORT: u16 = 80;

// include/uapi/linux/netfilter/nfnetlink.h, nf_tables.h, netfilter.h
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFTA_NAT_FLAGS: u16 = 7;
const NFT_NAT_DNAT: u32 = 1;
const NFPROTO_IPV4: u32 = 2;
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 2;
const NF_ACCEPT: u32 = 1;
const NF_IP_PRI_NAT_DST: i32 = -100;
const IPPROTO_TCP: u8 = 6;
const NLMSG_ERROR: u16 = 2;

/// Installs (or replaces) the redirect to `listen`, an IPv4 loopback address.
pub fn install(listen: SocketAddr) -> Result<()> {
    let IpAddr::V4(address) = listen.ip() else {
        return Err(anyhow!(
            "--install-redirect needs an IPv4 --listen address (169.254.169.254 is IPv4); \
             {listen} is not"
        ))
        .context(Failure::Usage);
    };
    let batch = batch(address.octets(), listen.port());
    transact(&batch)?;
    info!(
        table = TABLE,
        to = %listen,
        "redirect installed: TCP to 169.254.169.254:80 from this network namespace goes to the proxy"
    );
    Ok(())
}

/// The transaction's messages, in order, each with its sequence number.
fn batch(address: [u8; 4], port: u16) -> Vec<NetlinkMessage<NetfilterMessage>> {
    let table = || vec![TableAttribute::Name(TABLE.to_owned())];
    let messages: Vec<(NetfilterMessage, u16)> = vec![
        (control(ControlMessage::BatchBegin), 0),
        // Add-delete-add: the table exists (empty or ours from before) for the delete,
        // which removes our previous chain and rule with it.
        (
            ip(NfTablesMessage::NewTable(TableMessage {
                attributes: table(),
            })),
            NLM_F_CREATE,
        ),
        (
            ip(NfTablesMessage::DeleteTable(TableMessage {
                attributes: table(),
            })),
            0,
        ),
        (
            ip(NfTablesMessage::NewTable(TableMessage {
                attributes: table(),
            })),
            NLM_F_CREATE,
        ),
        (
            ip(NfTablesMessage::NewChain(ChainMessage {
                attributes: vec![
                    ChainAttribute::Table(TABLE.to_owned()),
                    ChainAttribute::Name(CHAIN.to_owned()),
                    ChainAttribute::Hook(vec![
                        Hook::Number(InetHookNumber::LocalOut.into()),
                        Hook::Priority(NF_IP_PRI_NAT_DST as u32),
                    ]),
                    ChainAttribute::Policy(NF_ACCEPT),
                    ChainAttribute::Type("nat".to_owned()),
                ],
            })),
            NLM_F_CREATE,
        ),
        (
            ip(NfTablesMessage::NewRule(RuleMessage {
                attributes: vec![
                    RuleAttribute::Table(TABLE.to_owned()),
                    RuleAttribute::Chain(CHAIN.to_owned()),
                    RuleAttribute::Expressions(rule(address, port)),
                ],
            })),
            NLM_F_CREATE | NLM_F_APPEND,
        ),
        (control(ControlMessage::BatchEnd), 0),
    ];
    let last = messages.len() - 1;
    messages
        .into_iter()
        .enumerate()
        .map(|(number, (message, flags))| {
            let mut message = NetlinkMessage::from(message);
            message.header.flags = NLM_F_REQUEST | flags;
            // Every change is acknowledged, so that each one's outcome is known.
            if number != 0 && number != last {
                message.header.flags |= NLM_F_ACK;
            }
            message.header.sequence_number = number as u32 + 1;
            message.finalize();
            message
        })
        .collect()
}

/// `ip daddr 169.254.169.254 tcp dport 80 dnat ip to ADDRESS:PORT`, as `nft` writes it.
fn rule(
    address: [u8; 4],
    port: u16,
) -> Vec<ListAttribute<netlink_packet_netfilter::nftables::ExpressionAttribute>> {
    let equals = |value: Vec<u8>| {
        Expressions::Cmp(vec![
            Cmp::SourceRegister(Register::Reg1),
            Cmp::Op(Operator::Equal),
            Cmp::Data(DataAttribute::Value(value)),
        ])
        .into()
    };
    let load = |base: u32, offset: u32, len: u32| {
        Expressions::Payload(vec![
            Payload::DestinationRegister(Register::Reg1),
            Payload::Base(base),
            Payload::Offset(offset),
            Payload::Len(len),
        ])
        .into()
    };
    let immediate = |register: Register, value: Vec<u8>| {
        Expressions::Immediate(vec![
            Immediate::DestinationRegister(register),
            Immediate::Data(DataAttribute::Value(value)),
        ])
        .into()
    };
    let u32_be = |kind: u16, value: u32| DefaultNla::new(kind, value.to_be_bytes().to_vec());
    vec![
        // The destination address: 4 bytes at offset 16 of the IPv4 header.
        load(NFT_PAYLOAD_NETWORK_HEADER, 16, 4),
        equals(IMDS.to_vec()),
        Expressions::Meta(vec![
            Meta::Key(MetaKey::L4Proto),
            Meta::DestinationRegister(Register::Reg1),
        ])
        .into(),
        equals(vec![IPPROTO_TCP]),
        // The destination port: 2 bytes at offset 2 of the TCP header.
        load(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2),
        equals(IMDS_PORT.to_be_bytes().to_vec()),
        immediate(Register::Reg1, address.to_vec()),
        immediate(Register::Reg2, port.to_be_bytes().to_vec()),
        Expressions::Other {
            expression_type: "nat".to_owned(),
            attributes: vec![
                u32_be(NFTA_NAT_TYPE, NFT_NAT_DNAT),
                u32_be(NFTA_NAT_FAMILY, NFPROTO_IPV4),
                u32_be(NFTA_NAT_REG_ADDR_MIN, Register::Reg1.into()),
                u32_be(NFTA_NAT_REG_PROTO_MIN, Register::Reg2.into()),
                u32_be(NFTA_NAT_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED),
            ],
        }
        .into(),
    ]
}

fn ip(message: NfTablesMessage) -> NetfilterMessage {
    NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
        message,
    )
}

fn control(message: ControlMessage) -> NetfilterMessage {
    NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
        message,
    )
}

/// Sends the batch and reads one acknowledgement per change; the first error fails it.
fn transact(batch: &[NetlinkMessage<NetfilterMessage>]) -> Result<()> {
    let mut socket = Socket::new(NETLINK_NETFILTER)
        .context("opening a netfilter netlink socket")
        .context(Failure::Internal)?;
    socket
        .bind_auto()
        .context("binding the netlink socket")
        .context(Failure::Internal)?;
    socket
        .connect(&NetlinkAddr::new(0, 0))
        .context("connecting the netlink socket")
        .context(Failure::Internal)?;
    let mut bytes = Vec::new();
    for message in batch {
        let start = bytes.len();
        bytes.resize(start + message.buffer_len(), 0);
        message.emit(&mut bytes[start..]);
    }
    socket
        .send(&bytes, 0)
        .context("sending the nftables transaction")
        .context(Failure::Internal)?;

    let mut pending: Vec<u32> = batch
        .iter()
        .filter(|m| m.header.flags & NLM_F_ACK != 0)
        .map(|m| m.header.sequence_number)
        .collect();
    while !pending.is_empty() {
        let (answer, _) = socket
            .recv_from_full()
            .context("reading the kernel's answer")
            .context(Failure::Internal)?;
        for (sequence, code) in acknowledgements(&answer)? {
            pending.retain(|s| *s != sequence);
            if code != 0 {
                return Err(refused(-code, sequence));
            }
        }
    }
    Ok(())
}

/// The (sequence number, error code) of each NLMSG_ERROR message in `buffer`; code 0 is
/// an acknowledgement, a negative one an errno.
fn acknowledgements(mut buffer: &[u8]) -> Result<Vec<(u32, i32)>> {
    let mut found = Vec::new();
    while buffer.len() >= 16 {
        let word =
            |at: usize| u32::from_ne_bytes(buffer[at..at + 4].try_into().unwrap_or_default());
        let length = word(0) as usize;
        if length < 16 || length > buffer.len() {
            bail!("the kernel's netlink answer is truncated");
        }
        let kind = u16::from_ne_bytes([buffer[4], buffer[5]]);
        if kind == NLMSG_ERROR && length >= 20 {
            found.push((word(8), word(16) as i32));
        }
        // Messages are 4-byte aligned.
        buffer = &buffer[((length + 3) & !3).min(buffer.len())..];
    }
    Ok(found)
}

/// What the kernel's errno means for an operator.
fn refused(errno: i32, sequence: u32) -> anyhow::Error {
    let step = match sequence {
        2..=4 => "the table",
        5 => "the nat chain",
        _ => "the redirect rule",
    };
    let os = std::io::Error::from_raw_os_error(errno);
    match errno {
        1 => anyhow!(
            "adding {step}: {os}; installing the redirect needs CAP_NET_ADMIN in the pod's \
             network namespace: run this init container as uid 0 with capabilities add: \
             [NET_ADMIN] (a non-root user does not keep added capabilities)"
        )
        .context(Failure::Usage),
        2 | 95 => anyhow!(
            "adding {step}: {os}; the node's kernel lacks nftables NAT (modules nf_tables, \
             nft_chain_nat, nft_nat)"
        )
        .context(Failure::Internal),
        _ => anyhow!("adding {step}: {os}").context(Failure::Internal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_is_one_transaction_that_replaces_only_our_table() {
        let batch = batch([127, 0, 0, 1], 8000);
        assert_eq!(batch.len(), 7);
        let acked: Vec<u32> = batch
            .iter()
            .filter(|m| m.header.flags & NLM_F_ACK != 0)
            .map(|m| m.header.sequence_number)
            .collect();
        assert_eq!(acked, [2, 3, 4, 5, 6]);
        // Every message names our table and no other; the only deletion is of it.
        for message in &batch[1..batch.len() - 1] {
            let netlink_packet_core::NetlinkPayload::InnerMessage(inner) = &message.payload else {
                panic!("{message:?}");
            };
            let netlink_packet_netfilter::NetfilterMessageInner::NfTables(nft) = &inner.inner
            else {
                panic!("{inner:?}");
            };
            let ours = match nft {
                NfTablesMessage::NewTable(t) | NfTablesMessage::DeleteTable(t) => {
                    t.attributes == [TableAttribute::Name(TABLE.to_owned())]
                }
                NfTablesMessage::NewChain(c) => c
                    .attributes
                    .contains(&ChainAttribute::Table(TABLE.to_owned())),
                NfTablesMessage::NewRule(r) => r
                    .attributes
                    .contains(&RuleAttribute::Table(TABLE.to_owned())),
                other => panic!("unexpected {other:?}"),
            };
            assert!(ours, "{nft:?}");
        }
    }

    #[test]
    fn acknowledgements_are_read_from_netlink_error_messages() {
        let mut answer = Vec::new();
        for (sequence, code) in [(2u32, 0i32), (3, -1)] {
            answer.extend_from_slice(&36u32.to_ne_bytes());
            answer.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            answer.extend_from_slice(&0u16.to_ne_bytes());
            answer.extend_from_slice(&sequence.to_ne_bytes());
            answer.extend_from_slice(&0u32.to_ne_bytes());
            answer.extend_from_slice(&code.to_ne_bytes());
            answer.extend_from_slice(&[0; 16]);
        }
        assert_eq!(acknowledgements(&answer).unwrap(), [(2, 0), (3, -1)]);
        assert!(acknowledgements(&answer[..30]).is_err());
        let err = refused(1, 6);
        assert_eq!(Failure::of(&err), Failure::Usage);
        assert!(format!("{err:#}").contains("NET_ADMIN"));
    }
}
