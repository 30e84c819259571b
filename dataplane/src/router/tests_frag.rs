use super::*;

/// An Ethernet frame with an IPv4 UDP packet: `opts` are IP options (a multiple of 4),
/// `payload` bytes after the IP header, fragment field `frag`.
fn packet(opts: &[u8], payload: usize, frag: u16) -> Vec<u8> {
    let ihl = 20 + opts.len();
    let mut f = vec![0u8; 14 + ihl + payload];
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x40 | (ihl / 4) as u8;
    f[16..18].copy_from_slice(&((ihl + payload) as u16).to_be_bytes());
    f[18..20].copy_from_slice(&0x1234u16.to_be_bytes());
    f[20..22].copy_from_slice(&frag.to_be_bytes());
    f[22] = 63;
    f[23] = 17;
    f[26..30].copy_from_slice(&[198, 51, 100, 1]);
    f[30..34].copy_from_slice(&[10, 71, 0, 2]);
    f[34..34 + opts.len()].copy_from_slice(opts);
    for (i, b) in f[14 + ihl..].iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    f
}

fn fragments(f: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    let p = plan(f, 14, mtu).unwrap();
    (0..p.count)
        .map(|k| {
            let mut out = vec![0u8; 2048];
            let n = write(f, &p, k, &mut out).unwrap();
            out.truncate(n);
            out
        })
        .collect()
}

fn field(f: &[u8]) -> (usize, bool, bool) {
    let v = u16::from_be_bytes([f[20], f[21]]);
    (usize::from(v & 0x1fff) * 8, v & 0x2000 != 0, v & 0x4000 != 0)
}

/// Puts fragments back together: (payload, more-fragments of the last).
fn reassemble(frags: &[Vec<u8>]) -> (Vec<u8>, bool) {
    let mut data = vec![];
    let mut more = false;
    for fr in frags {
        let ihl = usize::from(fr[14] & 0xf) * 4;
        let total = usize::from(u16::from_be_bytes([fr[16], fr[17]]));
        assert_eq!(fr.len(), 14 + total);
        assert_eq!(crate::offload::csum::checksum(&fr[14..14 + ihl]), 0, "header checksum");
        let (off, mf, df) = field(fr);
        assert!(!df);
        assert_eq!(off, data.len(), "contiguous");
        data.extend_from_slice(&fr[14 + ihl..]);
        more = mf;
    }
    (data, more)
}

#[test]
fn fragments_fit_the_mtu_and_reassemble_to_the_original() {
    let f = packet(&[], 1472, 0);
    let frags = fragments(&f, 1400);
    assert_eq!(frags.len(), 2);
    for fr in &frags {
        assert!(fr.len() - 14 <= 1400);
        assert_eq!(&fr[..14], &f[..14], "Ethernet header kept");
        assert_eq!(&fr[18..20], &f[18..20], "same identification");
        assert_eq!(fr[22], 63, "TTL kept");
    }
    assert_eq!((field(&frags[0]).0, field(&frags[0]).1), (0, true));
    assert_eq!(frags[0].len() - 14 - 20, 1376, "a multiple of 8");
    let (data, more) = reassemble(&frags);
    assert_eq!(data, f[34..]);
    assert!(!more);
}

#[test]
fn only_copied_options_go_into_later_fragments() {
    // Option 130 (security: copied, 8 bytes), option 7 (record route: not copied, 4
    // bytes), end of options: 16 bytes.
    let opts = [130, 8, 1, 2, 3, 4, 5, 6, 7, 7, 4, 0, 0, 0, 0, 0];
    let f = packet(&opts, 1000, 0);
    let frags = fragments(&f, 576);
    assert!(frags.len() >= 2);
    assert_eq!(usize::from(frags[0][14] & 0xf) * 4, 36, "first: all options");
    assert_eq!(&frags[0][34..50], &opts);
    for fr in &frags[1..] {
        assert_eq!(usize::from(fr[14] & 0xf) * 4, 28, "later: copied ones, padded");
        assert_eq!(&fr[34..42], &[130, 8, 1, 2, 3, 4, 5, 6]);
        assert!(fr.len() - 14 <= 576);
    }
    let (data, _) = reassemble(&frags);
    assert_eq!(data, f[14 + 36..]);
}

#[test]
fn a_fragment_is_fragmented_again_and_df_is_refused() {
    // The middle fragment of something larger: offset 1480, MF set.
    let f = packet(&[], 1480, 0x2000 | (1480 / 8));
    let frags = fragments(&f, 1000);
    assert_eq!(field(&frags[0]).0, 1480);
    assert!(frags.iter().all(|fr| field(fr).1), "MF kept on every piece, the last included");
    // The last fragment of something: MF clear stays clear on the last piece only.
    let f = packet(&[], 1480, 1480 / 8);
    let frags = fragments(&f, 1000);
    assert!(field(&frags[0]).1 && !field(&frags[1]).1);
    assert_eq!(plan(&packet(&[], 1480, 0x4000), 14, 1000), Err(FragError::DontFragment));
    assert_eq!(plan(&packet(&[], 1480, 0), 14, 27), Err(FragError::MtuTooSmall));
}

#[test]
fn malformed_input_never_panics() {
    let f = packet(&[130, 8, 1, 2, 3, 4, 5, 6], 600, 0);
    for cut in 0..f.len() {
        if let Ok(p) = plan(&f[..cut], 14, 300) {
            for k in 0..p.count + 1 {
                let _ = write(&f[..cut], &p, k, &mut [0u8; 400]);
            }
        }
    }
    let mut seed = 0x1234_5678u32;
    for _ in 0..2000 {
        let mut g = f.clone();
        for _ in 0..4 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let i = 14 + (seed as usize >> 8) % 40;
            g[i] = (seed >> 3) as u8;
        }
        if let Ok(p) = plan(&g, 14, 256) {
            for k in 0..p.count {
                let _ = write(&g, &p, k, &mut [0u8; 300]);
            }
        }
    }
    // A buffer too small for a fragment is an error, not a panic.
    let p = plan(&f, 14, 300).unwrap();
    assert_eq!(write(&f, &p, 0, &mut [0u8; 100]), Err(FragError::BufferTooSmall));
}
