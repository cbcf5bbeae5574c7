//! The page-ownership ledger of one process, for in-kernel attribution: which owner (an opaque
//! index the caller interns: a thread and its stack) holds each page of the process's memory
//! this run saw faulted in, and what every event that acquires, gives back or moves pages
//! charges.
//!
//! Owns: the pages and their owners; the anonymous mappings made since attaching (their pages
//! go to the owner that made the mapping, whoever touches them first); the program break;
//! `mremap`s and `mmap`s in flight per thread; each thread's last fault (for the transparent
//! huge page that may follow it); the figures of all this.
//! Charges are `rss` (bytes newly owned) and `rss-release` (bytes given back, to the owner
//! that held them). Pages this run never saw faulted in release nothing.
//! Must not touch: BPF, `/proc`, stacks or their decoding (the caller names owners and says
//! what backs a page), how charges add up (`profile`).

use std::collections::{BTreeMap, HashMap};

use crate::sample::{Metric, MetricValues};

/// The interval's charges, by owner index.
pub(crate) type Charges = HashMap<u32, MetricValues>;

/// The sizes of pymalloc's arenas (1 MiB from CPython 3.10 on 64-bit builds, 256 KiB
/// before): such mappings are not given to the owner that made them, whose allocation merely
/// overflowed the last arena. Their pools go to the code that first uses them, a finer grain
/// for small objects. (glibc's mmapped blocks are a page more than what was asked.)
const PYMALLOC_ARENA_SIZES: [u64; 2] = [1 << 20, 256 << 10];

/// A system call's return value that is an error (`-errno` as an unsigned word).
fn is_error(ret: u64) -> bool {
    ret >= (1 << 63)
}

/// What the ledger did, for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LedgerFigures {
    /// Faults on a page the ledger already gave an owner (counted once).
    pub(crate) faults_on_owned_pages: u64,
    /// Faults on file-backed or shared pages.
    pub(crate) file_or_shared_faults: u64,
    /// Faults that mapped a transparent huge page (each charged the whole huge page).
    pub(crate) huge_faults: u64,
    /// Faults in an anonymous mapping made since attaching (charged to the owner that made it).
    pub(crate) faults_in_mappings: u64,
    /// Read faults on anonymous memory never written (the zero page: charged nothing).
    pub(crate) zero_page_reads: u64,
    /// Bytes given back from owned pages.
    pub(crate) released_bytes: u64,
}

/// One page fault as the ledger needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fault {
    /// The faulting thread.
    pub(crate) tid: u32,
    /// The faulted address.
    pub(crate) addr: u64,
    /// Whether it was a write.
    pub(crate) write: bool,
    /// Whether the page is private anonymous memory (else file-backed or shared).
    pub(crate) anonymous: bool,
}

/// The pages one process holds, by owner.
#[derive(Debug)]
pub(crate) struct PageLedger {
    page_size: u64,
    /// Transparent huge pages: (size, whether a read fault maps the huge zero page).
    huge_page: (u64, bool),
    /// Page address -> owner.
    pages: BTreeMap<u64, u32>,
    /// Bytes owned now.
    held: u64,
    /// The program break; pages above a lowered break are given back.
    brk: Option<u64>,
    /// `mremap`s in flight, by thread: (old address, old length, new length).
    mremaps: HashMap<u32, (u64, u64, u64)>,
    /// Each thread's last fault: (page, owner, whether it was a write), for the
    /// [`PageLedger::huge_fault`] that may follow it.
    last_fault: HashMap<u32, (u64, u32, bool)>,
    /// Anonymous mappings being made, by thread: (length, owner).
    mmaps: HashMap<u32, (u64, u32)>,
    /// Anonymous mappings made since attaching: start -> (end, owner).
    mappings: BTreeMap<u64, (u64, u32)>,
    figures: LedgerFigures,
}

impl PageLedger {
    /// An empty ledger for pages of `page_size` bytes; `huge_page` is (size of a transparent
    /// huge page, whether a read fault maps the huge zero page); `brk` the program break when
    /// attaching, if the process has a heap.
    pub(crate) fn new(page_size: u64, huge_page: (u64, bool), brk: Option<u64>) -> Self {
        PageLedger {
            page_size: page_size.max(1),
            huge_page,
            pages: BTreeMap::new(),
            held: 0,
            brk,
            mremaps: HashMap::new(),
            last_fault: HashMap::new(),
            mmaps: HashMap::new(),
            mappings: BTreeMap::new(),
            figures: LedgerFigures::default(),
        }
    }

    /// Bytes owned now.
    pub(crate) fn held_bytes(&self) -> u64 {
        self.held
    }

    /// What the ledger did so far.
    pub(crate) fn figures(&self) -> LedgerFigures {
        self.figures
    }

    /// The owner of the page at `addr`, if one holds it.
    #[cfg(test)]
    fn owner_of(&self, addr: u64) -> Option<u32> {
        self.pages.get(&(addr & !(self.page_size - 1))).copied()
    }

    /// The owner of the anonymous mapping made since attaching that holds `page`, if any.
    fn mapped_by(&self, page: u64) -> Option<u32> {
        self.mappings
            .range(..=page)
            .next_back()
            .filter(|(_, (end, _))| page < *end)
            .map(|(_, &(_, owner))| owner)
    }

    /// A page fault: the page goes to the owner of the mapping that holds it (anonymous
    /// memory mapped since attaching), else to `owner()`, unless it is owned already or the
    /// fault is a read of anonymous memory never written (the zero page). Returns whether
    /// the fault was in such a mapping.
    pub(crate) fn fault(
        &mut self,
        fault: Fault,
        owner: impl FnOnce() -> u32,
        charges: &mut Charges,
    ) -> bool {
        let page = fault.addr & !(self.page_size - 1);
        let mapped_by = self.mapped_by(page).filter(|_| fault.anonymous);
        let owner = match mapped_by {
            Some(owner) => {
                self.figures.faults_in_mappings += 1;
                owner
            }
            None => owner(),
        };
        self.last_fault
            .insert(fault.tid, (page, owner, fault.write));
        if self.pages.contains_key(&page) {
            self.figures.faults_on_owned_pages += 1;
            return mapped_by.is_some();
        }
        if fault.anonymous && !fault.write {
            // A read of anonymous memory never written maps the shared zero page: no memory
            // yet; the write that follows takes the page.
            self.figures.zero_page_reads += 1;
            return mapped_by.is_some();
        }
        if !fault.anonymous {
            self.figures.file_or_shared_faults += 1;
        }
        self.take(page, self.page_size, owner, charges);
        mapped_by.is_some()
    }

    /// Thread `tid`'s last fault mapped a transparent huge page: its owner takes every page
    /// of the huge page not owned yet (unless it was a read that mapped the huge zero page).
    pub(crate) fn huge_fault(&mut self, tid: u32, charges: &mut Charges) {
        let Some((page, owner, write)) = self.last_fault.remove(&tid) else {
            return;
        };
        let (size, zero_page) = self.huge_page;
        if (!write && zero_page) || size == 0 {
            return;
        }
        self.figures.huge_faults += 1;
        self.take(page & !(size - 1), size, owner, charges);
    }

    /// `munmap(addr, len)`: the range's pages are given back, its mappings forgotten.
    pub(crate) fn munmap(&mut self, addr: u64, len: u64, charges: &mut Charges) {
        self.give_back(addr, len, charges);
        self.unmap(addr, len);
    }

    /// A `madvise` that drops the range's pages (`MADV_DONTNEED`, `MADV_FREE`, ...): they are
    /// given back; the mapping stays, so a later fault there goes to its owner again.
    pub(crate) fn madvise(&mut self, addr: u64, len: u64, charges: &mut Charges) {
        self.give_back(addr, len, charges);
    }

    /// `brk` returned `now`: pages between a lowered break and the old one are given back.
    pub(crate) fn brk(&mut self, now: u64, charges: &mut Charges) {
        if let Some(before) = self.brk.filter(|&before| now < before) {
            self.give_back(now, before - now, charges);
        }
        if !is_error(now) {
            self.brk = Some(now);
        }
    }

    /// Thread `tid` starts an anonymous private mapping of `len` bytes on behalf of `owner`.
    pub(crate) fn mmap_enter(&mut self, tid: u32, len: u64, owner: u32) {
        self.mmaps.insert(tid, (len, owner));
    }

    /// Thread `tid`'s `mmap` returned `addr`: the mapping (unless it is one of pymalloc's
    /// arenas) belongs to the owner that made it. Whether its start was seen: an anonymous
    /// private mapping is, any other (a file's, shared memory) is not.
    pub(crate) fn mmap_exit(&mut self, tid: u32, addr: u64) -> bool {
        let Some((len, owner)) = self.mmaps.remove(&tid) else {
            return false;
        };
        if !is_error(addr) && len > 0 && !PYMALLOC_ARENA_SIZES.contains(&len) {
            let end = (addr + len).next_multiple_of(self.page_size);
            self.unmap(addr, end - addr);
            self.mappings.insert(addr, (end, owner));
        }
        true
    }

    /// Thread `tid` starts `mremap(old, old_len, new_len)`.
    pub(crate) fn mremap_enter(&mut self, tid: u32, old: u64, old_len: u64, new_len: u64) {
        self.mremaps.insert(tid, (old, old_len, new_len));
    }

    /// Thread `tid`'s `mremap` returned `new`: pages keep their owners at their new
    /// addresses; pages beyond a shrunk length are given back.
    pub(crate) fn mremap_exit(&mut self, tid: u32, new: u64, charges: &mut Charges) {
        if let Some((old, old_len, new_len)) = self.mremaps.remove(&tid)
            && !is_error(new)
        {
            self.moved(old, old_len, new, new_len, charges);
        }
    }

    /// `owner` takes the pages of `[start, start + len)` that have no owner yet.
    fn take(&mut self, start: u64, len: u64, owner: u32, charges: &mut Charges) {
        let mut taken = 0;
        let mut page = start;
        while page < start.saturating_add(len) {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.pages.entry(page) {
                slot.insert(owner);
                taken += self.page_size;
            }
            page += self.page_size;
        }
        self.held += taken;
        charges.entry(owner).or_default().add(Metric::Rss, taken);
    }

    /// Forgets the mappings' parts in `[addr, addr + len)` (their remainders stay).
    fn unmap(&mut self, addr: u64, len: u64) {
        let end = addr.saturating_add(len);
        let first = self
            .mappings
            .range(..addr)
            .next_back()
            .filter(|(_, (e, _))| *e > addr)
            .map(|(&s, _)| s);
        let hit: Vec<u64> = first
            .into_iter()
            .chain(self.mappings.range(addr..end).map(|(&s, _)| s))
            .collect();
        for start in hit {
            let Some((stop, owner)) = self.mappings.remove(&start) else {
                continue;
            };
            if start < addr {
                self.mappings.insert(start, (addr, owner));
            }
            if stop > end {
                self.mappings.insert(end, (stop, owner));
            }
        }
    }

    /// Gives back the owned pages in `[addr, addr + len)`, each charged as a release to its
    /// owner.
    fn give_back(&mut self, addr: u64, len: u64, charges: &mut Charges) {
        let end = addr.saturating_add(len);
        let gone: Vec<(u64, u32)> = self.pages.range(addr..end).map(|(&p, &o)| (p, o)).collect();
        for (page, owner) in gone {
            self.pages.remove(&page);
            self.held -= self.page_size;
            self.figures.released_bytes += self.page_size;
            charges
                .entry(owner)
                .or_default()
                .add(Metric::RssRelease, self.page_size);
        }
    }

    /// `mremap` moved `[old, old + old_len)` to `new` with `new_len` bytes.
    fn moved(&mut self, old: u64, old_len: u64, new: u64, new_len: u64, charges: &mut Charges) {
        if new_len < old_len {
            self.give_back(old + new_len, old_len - new_len, charges);
        }
        if let Some((_, owner)) = self.mappings.get(&old).copied() {
            self.unmap(old, old_len);
            let end = (new + new_len).next_multiple_of(self.page_size);
            self.mappings.insert(new, (end, owner));
        }
        if new == old {
            return;
        }
        let kept = old_len.min(new_len);
        let moving: Vec<(u64, u32)> = self
            .pages
            .range(old..old.saturating_add(kept))
            .map(|(&p, &o)| (p, o))
            .collect();
        for (page, _) in &moving {
            self.pages.remove(page);
        }
        for (page, owner) in moving {
            self.pages.insert(page - old + new, owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;
    const HUGE: u64 = 2 << 20;

    fn ledger() -> PageLedger {
        PageLedger::new(PAGE, (HUGE, true), Some(0x10_0000))
    }

    fn write(tid: u32, addr: u64) -> Fault {
        Fault {
            tid,
            addr,
            write: true,
            anonymous: true,
        }
    }

    fn rss(charges: &Charges, owner: u32) -> u64 {
        charges.get(&owner).map_or(0, |v| v.get(Metric::Rss))
    }

    fn released(charges: &Charges, owner: u32) -> u64 {
        charges.get(&owner).map_or(0, |v| v.get(Metric::RssRelease))
    }

    #[test]
    fn a_written_page_goes_to_its_first_owner_once() {
        let mut ledger = ledger();
        let mut charges = Charges::new();
        ledger.fault(write(1, 0x5000_0010), || 7, &mut charges);
        ledger.fault(write(2, 0x5000_0800), || 8, &mut charges);
        assert_eq!(rss(&charges, 7), PAGE);
        assert_eq!(rss(&charges, 8), 0);
        assert_eq!(ledger.owner_of(0x5000_0000), Some(7));
        assert_eq!(ledger.held_bytes(), PAGE);
        assert_eq!(ledger.figures().faults_on_owned_pages, 1);
    }

    #[test]
    fn reading_untouched_anonymous_memory_takes_nothing() {
        let mut ledger = ledger();
        let mut charges = Charges::new();
        let read = Fault {
            write: false,
            ..write(1, 0x6000_0000)
        };
        ledger.fault(read, || 3, &mut charges);
        assert_eq!(rss(&charges, 3), 0);
        assert_eq!(ledger.figures().zero_page_reads, 1);
        // A read of a file-backed page maps it: charged.
        let file = Fault {
            anonymous: false,
            ..read
        };
        ledger.fault(file, || 4, &mut charges);
        assert_eq!(rss(&charges, 4), PAGE);
        assert_eq!(ledger.figures().file_or_shared_faults, 1);
    }

    #[test]
    fn a_huge_page_goes_whole_to_the_fault_before_it() {
        let mut ledger = ledger();
        let mut charges = Charges::new();
        ledger.fault(write(1, 0x4000_0000 + 3 * PAGE), || 5, &mut charges);
        ledger.huge_fault(1, &mut charges);
        assert_eq!(rss(&charges, 5), HUGE);
        assert_eq!(ledger.owner_of(0x4000_0000 + HUGE - PAGE), Some(5));
        assert_eq!(ledger.figures().huge_faults, 1);
        // A read that maps the huge zero page takes nothing; nor does a huge fault with no
        // fault before it.
        let mut charges = Charges::new();
        let read = Fault {
            write: false,
            ..write(2, 0x8000_0000)
        };
        ledger.fault(read, || 6, &mut charges);
        ledger.huge_fault(2, &mut charges);
        ledger.huge_fault(9, &mut charges);
        assert_eq!(rss(&charges, 6), 0);
        assert_eq!(ledger.held_bytes(), HUGE);
    }

    #[test]
    fn munmap_gives_back_only_owned_pages_to_their_owners() {
        let mut ledger = ledger();
        let mut charges = Charges::new();
        for i in 0..4 {
            let owner = if i < 2 { 1 } else { 2 };
            ledger.fault(write(1, 0x7000_0000 + i * PAGE), || owner, &mut charges);
        }
        let mut charges = Charges::new();
        // Pages before and after the owned ones were never seen: they release nothing.
        ledger.munmap(0x7000_0000 - 4 * PAGE, 7 * PAGE, &mut charges);
        assert_eq!(released(&charges, 1), 2 * PAGE);
        assert_eq!(released(&charges, 2), PAGE);
        assert_eq!(ledger.owner_of(0x7000_0000 + 3 * PAGE), Some(2));
        assert_eq!(ledger.held_bytes(), PAGE);
        assert_eq!(ledger.figures().released_bytes, 3 * PAGE);
    }

    #[test]
    fn madvise_gives_pages_back_but_the_mapping_keeps_its_owner() {
        let mut ledger = ledger();
        let mut charges = Charges::new();
        ledger.mmap_enter(1, 32 * PAGE, 10);
        ledger.mmap_exit(1, 0x9000_0000);
        ledger.fault(write(2, 0x9000_0000), || 20, &mut charges);
        assert_eq!(
            rss(&charges, 10),
            PAGE,
            "the mapping's owner, not the toucher"
        );
        let mut charges = Charges::new();
        ledger.madvise(0x9000_0000, 32 * PAGE, &mut charges);
        assert_eq!(released(&charges, 10), PAGE);
        ledger.fault(write(2, 0x9000_0000), || 20, &mut charges);
        assert_eq!(rss(&charges, 10), PAGE);
        assert_eq!(ledger.figures().faults_in_mappings, 2);
    }

    #[test]
    fn mappings_split_on_partial_munmap_and_arenas_are_not_given_away() {
        let mut ledger = ledger();
        let mut charges = Charges::new();
        ledger.mmap_enter(1, 8 * PAGE, 10);
        ledger.mmap_exit(1, 0xa000_0000);
        ledger.munmap(0xa000_0000 + 2 * PAGE, 2 * PAGE, &mut charges);
        ledger.fault(write(2, 0xa000_0000 + PAGE), || 20, &mut charges);
        ledger.fault(write(2, 0xa000_0000 + 2 * PAGE), || 20, &mut charges);
        ledger.fault(write(2, 0xa000_0000 + 5 * PAGE), || 20, &mut charges);
        assert_eq!(
            rss(&charges, 10),
            2 * PAGE,
            "both remainders stay the mapper's"
        );
        assert_eq!(rss(&charges, 20), PAGE, "the hole is the toucher's");
        // A pymalloc arena (1 MiB) and a failed mmap belong to no one.
        ledger.mmap_enter(1, 1 << 20, 11);
        ledger.mmap_exit(1, 0xb000_0000);
        ledger.mmap_enter(1, 8 * PAGE, 12);
        ledger.mmap_exit(1, (-12i64) as u64);
        ledger.fault(write(2, 0xb000_0000), || 21, &mut charges);
        assert_eq!(rss(&charges, 21), PAGE);
        assert_eq!(rss(&charges, 11) + rss(&charges, 12), 0);
    }

    #[test]
    fn mremap_moves_pages_with_their_owners_and_gives_back_a_shrunk_tail() {
        let mut ledger = ledger();
        let mut charges = Charges::new();
        ledger.mmap_enter(1, 4 * PAGE, 10);
        ledger.mmap_exit(1, 0xc000_0000);
        for i in 0..4 {
            ledger.fault(write(1, 0xc000_0000 + i * PAGE), || 99, &mut charges);
        }
        let mut charges = Charges::new();
        ledger.mremap_enter(1, 0xc000_0000, 4 * PAGE, 2 * PAGE);
        ledger.mremap_exit(1, 0xd000_0000, &mut charges);
        assert_eq!(released(&charges, 10), 2 * PAGE);
        assert_eq!(ledger.owner_of(0xc000_0000), None);
        assert_eq!(ledger.owner_of(0xd000_0000 + PAGE), Some(10));
        assert_eq!(ledger.held_bytes(), 2 * PAGE);
        // The mapping moved too: a new page there is still its owner's.
        let mut charges = Charges::new();
        ledger.fault(write(2, 0xd000_0000 + PAGE / 2), || 20, &mut charges);
        assert_eq!(ledger.figures().faults_on_owned_pages, 1);
        // A failed mremap changes nothing.
        ledger.mremap_enter(1, 0xd000_0000, 2 * PAGE, 8 * PAGE);
        ledger.mremap_exit(1, (-12i64) as u64, &mut charges);
        assert_eq!(ledger.owner_of(0xd000_0000), Some(10));
    }

    #[test]
    fn a_lowered_break_gives_back_the_heap_above_it() {
        let mut ledger = ledger();
        let mut charges = Charges::new();
        ledger.brk(0x10_0000 + 16 * PAGE, &mut charges);
        for i in 0..16 {
            ledger.fault(write(1, 0x10_0000 + i * PAGE), || 1, &mut charges);
        }
        let mut charges = Charges::new();
        ledger.brk(0x10_0000 + 4 * PAGE, &mut charges);
        assert_eq!(released(&charges, 1), 12 * PAGE);
        // An error return leaves the break where it was.
        ledger.brk((-12i64) as u64, &mut charges);
        ledger.brk(0x10_0000 + 2 * PAGE, &mut charges);
        assert_eq!(released(&charges, 1), 14 * PAGE);
        assert_eq!(ledger.held_bytes(), 2 * PAGE);
    }
}
