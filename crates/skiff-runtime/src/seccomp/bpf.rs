//! A tiny classic-BPF assembler for seccomp filters, and an interpreter used by the tests to
//! check what a program decides for a given syscall.

/// One BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instruction {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

/// A compiled program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The instructions, in order.
    pub instructions: Vec<Instruction>,
    /// Whether a rule returns `SECCOMP_RET_USER_NOTIF`: the filter is then loaded with a
    /// listener.
    pub notify: bool,
}

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RET_K: u16 = 0x06;
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const KILL_PROCESS: u32 = 0x8000_0000;
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARGS: u32 = 16;

/// How an argument is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// `arg != value`.
    Ne,
    /// `arg < value`.
    Lt,
    /// `arg <= value`.
    Le,
    /// `arg == value`.
    Eq,
    /// `arg >= value`.
    Ge,
    /// `arg > value`.
    Gt,
    /// `arg & mask == value`.
    MaskedEq(u64),
}

/// One argument condition of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgCheck {
    /// Argument index (0-5).
    pub index: usize,
    /// The comparison.
    pub op: Compare,
    /// The value compared against.
    pub value: u64,
}

/// One syscall number with its conditions and action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The syscall number.
    pub nr: i64,
    /// Every condition must hold.
    pub args: Vec<ArgCheck>,
    /// The return value when it matches.
    pub action: u32,
}

/// Instructions with symbolic jump targets, resolved at the end.
enum Op {
    Plain(Instruction),
    /// A conditional jump: (code, k, label if true, label if false); `None` = fall through.
    Jump(u16, u32, Option<usize>, Option<usize>),
    Label(usize),
}

fn stmt(code: u16, k: u32) -> Op {
    Op::Plain(Instruction {
        code,
        jt: 0,
        jf: 0,
        k,
    })
}

/// Emits the test of one 64-bit argument; jumps to `fail` when it does not hold and falls
/// through when it does.
fn emit_arg(ops: &mut Vec<Op>, check: &ArgCheck, fail: usize, next_label: &mut usize) {
    let lo = OFFSET_ARGS + (check.index as u32) * 8;
    let hi = lo + 4;
    let (vhi, vlo) = ((check.value >> 32) as u32, check.value as u32);
    let mut fresh = || {
        *next_label += 1;
        *next_label
    };
    match check.op {
        Compare::Eq | Compare::MaskedEq(_) => {
            let (mhi, mlo) = match check.op {
                Compare::MaskedEq(mask) => ((mask >> 32) as u32, mask as u32),
                _ => (u32::MAX, u32::MAX),
            };
            ops.push(stmt(LD_W_ABS, hi));
            if mhi != u32::MAX {
                ops.push(stmt(AND_K, mhi));
            }
            ops.push(Op::Jump(JEQ_K, vhi, None, Some(fail)));
            ops.push(stmt(LD_W_ABS, lo));
            if mlo != u32::MAX {
                ops.push(stmt(AND_K, mlo));
            }
            ops.push(Op::Jump(JEQ_K, vlo, None, Some(fail)));
        }
        Compare::Ne => {
            let pass = fresh();
            ops.push(stmt(LD_W_ABS, hi));
            ops.push(Op::Jump(JEQ_K, vhi, None, Some(pass)));
            ops.push(stmt(LD_W_ABS, lo));
            ops.push(Op::Jump(JEQ_K, vlo, Some(fail), None));
            ops.push(Op::Label(pass));
        }
        Compare::Gt | Compare::Ge | Compare::Lt | Compare::Le => {
            // hi above: decided; hi equal: compare lo; hi below: decided.
            let pass = fresh();
            let greater_wins = matches!(check.op, Compare::Gt | Compare::Ge);
            let (on_hi_greater, on_hi_less) = if greater_wins {
                (pass, fail)
            } else {
                (fail, pass)
            };
            ops.push(stmt(LD_W_ABS, hi));
            ops.push(Op::Jump(JGT_K, vhi, Some(on_hi_greater), None));
            ops.push(Op::Jump(JEQ_K, vhi, None, Some(on_hi_less)));
            ops.push(stmt(LD_W_ABS, lo));
            match check.op {
                Compare::Gt => ops.push(Op::Jump(JGT_K, vlo, Some(pass), Some(fail))),
                Compare::Ge => ops.push(Op::Jump(JGE_K, vlo, Some(pass), Some(fail))),
                Compare::Lt => ops.push(Op::Jump(JGE_K, vlo, Some(fail), Some(pass))),
                _ => ops.push(Op::Jump(JGT_K, vlo, Some(fail), Some(pass))),
            }
            ops.push(Op::Label(pass));
        }
    }
}

/// Assembles the whole filter. Long jumps (over 255 instructions) are impossible here: each
/// rule's jumps only reach the rule's end.
pub fn assemble(rules: &[Rule], default_action: u32) -> Filter {
    let mut ops = vec![
        stmt(LD_W_ABS, OFFSET_ARCH),
        Op::Plain(Instruction {
            code: JEQ_K,
            jt: 1,
            jf: 0,
            k: AUDIT_ARCH_X86_64,
        }),
        stmt(RET_K, KILL_PROCESS),
        stmt(LD_W_ABS, OFFSET_NR),
        // x32 syscalls (the bit set) get the default action, never a rule's.
        Op::Plain(Instruction {
            code: JGE_K,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        }),
        stmt(RET_K, default_action),
    ];
    let mut label = 0usize;
    for rule in rules {
        label += 1;
        let next = label;
        ops.push(Op::Jump(JEQ_K, rule.nr as u32, None, Some(next)));
        let needs_reload = !rule.args.is_empty();
        for check in &rule.args {
            emit_arg(&mut ops, check, next, &mut label);
        }
        ops.push(stmt(RET_K, rule.action));
        ops.push(Op::Label(next));
        if needs_reload {
            ops.push(stmt(LD_W_ABS, OFFSET_NR));
        }
    }
    ops.push(stmt(RET_K, default_action));

    // Resolve labels to instruction indices, then to relative offsets.
    let mut positions = std::collections::HashMap::new();
    let mut index = 0usize;
    for op in &ops {
        match op {
            Op::Label(l) => {
                positions.insert(*l, index);
            }
            _ => index += 1,
        }
    }
    let mut instructions = Vec::with_capacity(index);
    for op in &ops {
        let here = instructions.len();
        match op {
            Op::Plain(insn) => instructions.push(*insn),
            Op::Jump(code, k, jt, jf) => {
                let offset = |target: &Option<usize>| -> u8 {
                    target.map_or(0, |l| {
                        let to = positions.get(&l).copied().unwrap_or(here + 1);
                        u8::try_from(to.saturating_sub(here + 1)).unwrap_or(u8::MAX)
                    })
                };
                instructions.push(Instruction {
                    code: *code,
                    jt: offset(jt),
                    jf: offset(jf),
                    k: *k,
                });
            }
            Op::Label(_) => {}
        }
    }
    Filter {
        instructions,
        notify: false,
    }
}

impl Filter {
    /// Runs the program on a syscall as the kernel would (for tests and debugging).
    pub fn evaluate(&self, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let word = |offset: u32| -> u32 {
            match offset {
                OFFSET_NR => nr,
                OFFSET_ARCH => arch,
                o if o >= OFFSET_ARGS => {
                    let i = ((o - OFFSET_ARGS) / 8) as usize;
                    let high = (o - OFFSET_ARGS) % 8 == 4;
                    let v = args.get(i).copied().unwrap_or(0);
                    if high { (v >> 32) as u32 } else { v as u32 }
                }
                _ => 0,
            }
        };
        let (mut a, mut pc) = (0u32, 0usize);
        while let Some(insn) = self.instructions.get(pc) {
            pc += 1;
            match insn.code {
                LD_W_ABS => a = word(insn.k),
                AND_K => a &= insn.k,
                RET_K => return insn.k,
                JEQ_K | JGT_K | JGE_K => {
                    let taken = match insn.code {
                        JEQ_K => a == insn.k,
                        JGT_K => a > insn.k,
                        _ => a >= insn.k,
                    };
                    pc += usize::from(if taken { insn.jt } else { insn.jf });
                }
                _ => return KILL_PROCESS,
            }
        }
        KILL_PROCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW: u32 = 0x7fff_0000;
    const EPERM: u32 = 0x0005_0001;

    fn run(filter: &Filter, nr: u32, args: [u64; 6]) -> u32 {
        filter.evaluate(AUDIT_ARCH_X86_64, nr, args)
    }

    #[test]
    fn plain_rules_match_by_number_and_fall_back_to_the_default() {
        let filter = assemble(
            &[Rule {
                nr: 1,
                args: vec![],
                action: ALLOW,
            }],
            EPERM,
        );
        assert_eq!(run(&filter, 1, [0; 6]), ALLOW);
        assert_eq!(run(&filter, 2, [0; 6]), EPERM);
        assert_eq!(
            filter.evaluate(0x4000_0003, 1, [0; 6]),
            KILL_PROCESS,
            "a foreign architecture is killed"
        );
        assert_eq!(
            run(&filter, X32_SYSCALL_BIT | 1, [0; 6]),
            EPERM,
            "x32 calls get the default"
        );
    }

    #[test]
    fn sixty_four_bit_comparisons_use_both_halves() {
        let big = 0x1_0000_0005u64;
        for (op, value, yes, no) in [
            (Compare::Eq, big, big, 5),
            (Compare::Ne, big, 5, big),
            (Compare::Gt, big, big + 1, big),
            (Compare::Ge, big, big, big - 1),
            (Compare::Lt, big, 5, big),
            (Compare::Le, big, big, big + 1),
            (Compare::MaskedEq(0xff), 0x05, 0x1234_0005, 0x06),
        ] {
            let filter = assemble(
                &[Rule {
                    nr: 7,
                    args: vec![ArgCheck {
                        index: 2,
                        op,
                        value,
                    }],
                    action: ALLOW,
                }],
                EPERM,
            );
            assert_eq!(
                run(&filter, 7, [0, 0, yes, 0, 0, 0]),
                ALLOW,
                "{op:?} {yes:#x}"
            );
            assert_eq!(
                run(&filter, 7, [0, 0, no, 0, 0, 0]),
                EPERM,
                "{op:?} {no:#x}"
            );
        }
    }

    #[test]
    fn every_condition_of_a_rule_must_hold_and_later_rules_still_apply() {
        let rules = [
            Rule {
                nr: 9,
                args: vec![
                    ArgCheck {
                        index: 0,
                        op: Compare::Eq,
                        value: 1,
                    },
                    ArgCheck {
                        index: 1,
                        op: Compare::Eq,
                        value: 2,
                    },
                ],
                action: ALLOW,
            },
            Rule {
                nr: 9,
                args: vec![ArgCheck {
                    index: 0,
                    op: Compare::Eq,
                    value: 3,
                }],
                action: 0x0005_000d,
            },
        ];
        let filter = assemble(&rules, EPERM);
        assert_eq!(run(&filter, 9, [1, 2, 0, 0, 0, 0]), ALLOW);
        assert_eq!(run(&filter, 9, [1, 3, 0, 0, 0, 0]), EPERM);
        assert_eq!(run(&filter, 9, [3, 0, 0, 0, 0, 0]), 0x0005_000d);
    }
}
