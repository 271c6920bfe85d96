//! The token bucket filter (`tbf`) qdisc's netlink options, built by hand:
//! netlink-packet-route 0.34 knows only fq_codel and ingress among qdiscs, so the options
//! go as raw attributes (`TcOption::Other`) in the layout of the kernel's
//! `include/uapi/linux/pkt_sched.h` (`struct tc_tbf_qopt`, `TCA_TBF_*`).
//!
//! The rate spec says `linklayer = ethernet`, which makes the kernel compute transmission
//! times itself (`psched_ratecfg_precompute`) instead of wanting the rate table `tc`
//! computes in userspace (`TCA_TBF_RTAB`, needed only for `TC_LINKLAYER_UNAWARE`), and the
//! bucket size goes as `TCA_TBF_BURST` in bytes, so no tick conversions are needed either.

use netlink_packet_route::tc::TcOption;
use rtnetlink::packet_core::DefaultNla;

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
const TC_LINKLAYER_ETHERNET: u8 = 1;

/// A tbf rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tbf {
    /// Bytes per second.
    pub rate: u64,
    /// Bucket size in bytes (what may leave at line rate after an idle spell).
    pub burst: u32,
    /// Bytes that may queue behind the bucket before packets are dropped.
    pub limit: u32,
}

impl Tbf {
    /// `rate_bits` bits per second with a bucket of one GSO packet (64 KiB, so veth's
    /// segmentation offload passes unsplit) and a queue of 50 ms at that rate, as
    /// `tc qdisc add ... tbf rate R burst 64k latency 50ms` would.
    pub fn for_rate(rate_bits: u64) -> Tbf {
        let rate = rate_bits / 8;
        let burst = 64 * 1024;
        Tbf {
            rate,
            burst,
            limit: (rate / 20).clamp(burst as u64, u32::MAX as u64) as u32,
        }
    }

    /// The qdisc's `TCA_OPTIONS`: `TCA_TBF_PARMS` (`struct tc_tbf_qopt`: rate spec, empty
    /// peak-rate spec, limit, buffer, mtu; native endian), `TCA_TBF_BURST`, and
    /// `TCA_TBF_RATE64` for rates beyond 32 bits.
    pub fn options(&self) -> Vec<TcOption> {
        let mut qopt = Vec::with_capacity(36);
        // struct tc_ratespec { u8 cell_log; u8 linklayer; u16 overhead; i16 cell_align;
        //                      u16 mpu; u32 rate; }
        qopt.push(0u8);
        qopt.push(TC_LINKLAYER_ETHERNET);
        qopt.extend_from_slice(&0u16.to_ne_bytes());
        qopt.extend_from_slice(&0i16.to_ne_bytes());
        qopt.extend_from_slice(&0u16.to_ne_bytes());
        qopt.extend_from_slice(&(self.rate.min(u32::MAX as u64) as u32).to_ne_bytes());
        // peakrate: none.
        qopt.extend_from_slice(&[0u8; 12]);
        qopt.extend_from_slice(&self.limit.to_ne_bytes());
        // buffer and mtu (in scheduler ticks): the kernel derives them from TCA_TBF_BURST.
        qopt.extend_from_slice(&0u32.to_ne_bytes());
        qopt.extend_from_slice(&0u32.to_ne_bytes());
        let mut out = vec![
            TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, qopt)),
            TcOption::Other(DefaultNla::new(
                TCA_TBF_BURST,
                self.burst.to_ne_bytes().to_vec(),
            )),
        ];
        if self.rate > u32::MAX as u64 {
            out.push(TcOption::Other(DefaultNla::new(
                TCA_TBF_RATE64,
                self.rate.to_ne_bytes().to_vec(),
            )));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::tc::TcOption;
    use rtnetlink::packet_core::Nla;

    #[test]
    fn qopt_layout_matches_the_kernel_struct() {
        let t = Tbf::for_rate(200_000_000);
        assert_eq!(t.rate, 25_000_000);
        assert_eq!(t.limit, 1_250_000);
        let opts = t.options();
        assert_eq!(opts.len(), 2, "no RATE64 below 4 GB/s");
        let TcOption::Other(parms) = &opts[0] else {
            panic!("raw attribute expected")
        };
        assert_eq!(parms.kind(), TCA_TBF_PARMS);
        let mut buf = vec![0u8; parms.value_len()];
        parms.emit_value(&mut buf);
        assert_eq!(buf.len(), 36, "sizeof(struct tc_tbf_qopt)");
        assert_eq!(buf[1], TC_LINKLAYER_ETHERNET);
        assert_eq!(
            u32::from_ne_bytes(buf[8..12].try_into().unwrap()),
            25_000_000
        );
        assert_eq!(
            u32::from_ne_bytes(buf[24..28].try_into().unwrap()),
            1_250_000
        );
        let TcOption::Other(burst) = &opts[1] else {
            panic!("raw attribute expected")
        };
        assert_eq!(burst.kind(), TCA_TBF_BURST);
        assert_eq!(burst.value_len(), 4);
        assert_eq!(Tbf::for_rate(40_000_000_000).options().len(), 3);
    }
}
