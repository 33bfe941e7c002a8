// SPDX-License-Identifier: GPL-2.0
/*
 * kvmi_demo: a live KVM introspection session, for `make run`.
 *
 * This program is both the VMM (it creates a VM with the KVM selftest
 * library and hands one end of a socketpair to KVM_INTROSPECTION_HOOK)
 * and the introspection tool (it speaks the KVMI protocol on the other
 * end).  It prints every event with the vCPU state that came with it,
 * answers it (letting through, blocking or changing the guest's CR and MSR
 * writes), then unhooks and says what happened.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/kvmi.h>
#include <linux/kvm_para.h>

#include "kvm_util.h"
#include "processor.h"

#define NR_VCPUS	2
#define NR_AGENT_CALLS	3
#define NR_WRITES	2	/* of CR4, CR3 and MSR_STAR, by each vCPU */
#define GUEST_STAR	0x0023001000000000ull	/* + write number */
#define TOOL_STAR	0x0023001000c0ffeeull	/* the tool's replacement */
#define NR_HOOKS	2	/* syscall table entries vCPU 0 overwrites */
#define HOOK_ADDR	0xffffffffc0de0000ull	/* + entry number */

static int tool_fd;
static uint32_t cmd_seq = 1000;

/*
 * Guest: an "agent" that calls the tool a few times, writes registers the
 * tool watches, then counts.
 */
static volatile uint64_t guest_counter[NR_VCPUS];
/* Set by the tool once it enabled the events: 1 hypercalls, 2 writes. */
static volatile int go;

/* CR4 and STAR after each write: as read back by the guest, as answered. */
struct after_writes {
	uint64_t cr4[NR_WRITES];
	uint64_t star[NR_WRITES];
};
static volatile struct after_writes guest_read[NR_VCPUS];
/*
 * The guest kernel's "system call table": a page of its own, which the
 * tool write-protects; vCPU 0 then hooks NR_HOOKS entries, as a rootkit
 * would.
 */
static volatile uint64_t guest_sys_call_table[512] __aligned(4096);
/* The tool's view of it (through the VMM's mapping) and its gpa. */
static volatile uint64_t *sys_call_table_hva;
static __u64 sys_call_table_gpa;
static struct after_writes tool_answer[NR_VCPUS];
static int nr_cr4[NR_VCPUS], nr_star[NR_VCPUS];
/* The two writes the tool does not let through, for the summary. */
static struct kvmi_event_cr blocked_cr4;
static struct kvmi_event_msr replaced_star;

static void agent_hypercall(void)
{
	uint64_t rax = KVM_HC_XEN_HVM_OP;

	if (host_cpu_is_amd)
		asm volatile("vmmcall" : "+a"(rax)
			     : "D"(KVM_HC_XEN_HVM_OP_GUEST_REQUEST_VM_EVENT)
			     : "memory");
	else
		asm volatile("vmcall" : "+a"(rax)
			     : "D"(KVM_HC_XEN_HVM_OP_GUEST_REQUEST_VM_EVENT)
			     : "memory");
}

static void guest_code(int id)
{
	int i;

	while (!go)
		asm volatile("pause");
	for (i = 0; i < NR_AGENT_CALLS; i++)
		agent_hypercall();

	while (go < 2)
		asm volatile("pause");
	for (i = 0; i < NR_WRITES; i++) {
		/* PCE only lets CPL 3 read the PMCs: harmless to toggle. */
		set_cr4(get_cr4() ^ X86_CR4_PCE);
		guest_read[id].cr4[i] = get_cr4();
		/* The same value: a TLB flush, as a kernel does. */
		asm volatile("mov %0, %%cr3" : : "r"(get_cr3()) : "memory");
		wrmsr(MSR_STAR, GUEST_STAR + i);
		guest_read[id].star[i] = rdmsr(MSR_STAR);
	}
	/* Counting also tells the VMM that the writes above are done. */
	for (;;) {
		if (id == 0 && go == 3) {
			for (i = 0; i < NR_HOOKS; i++)
				guest_sys_call_table[i] = HOOK_ADDR + i;
			go = 4;
		}
		guest_counter[id]++;
	}
}

static void *vcpu_thread(void *arg)
{
	struct kvm_vcpu *vcpu = arg;
	struct ucall uc;

	for (;;) {
		vcpu_run(vcpu);
		if (vcpu->run->exit_reason == KVM_EXIT_IO &&
		    get_ucall(vcpu, &uc) == UCALL_ABORT)
			REPORT_GUEST_ASSERT(uc);
		if (vcpu->run->exit_reason == KVM_EXIT_SYSTEM_EVENT)
			return NULL;
	}
	return NULL;
}

static void xwrite(const void *buf, size_t size)
{
	TEST_ASSERT(write(tool_fd, buf, size) == (ssize_t)size,
		    "write to the KVMI socket: %s", strerror(errno));
}

static int xread(void *buf, size_t size, int timeout_ms)
{
	struct pollfd pfd = { .fd = tool_fd, .events = POLLIN };
	size_t done = 0;
	ssize_t n;

	while (done < size) {
		if (poll(&pfd, 1, timeout_ms) != 1)
			return -ETIMEDOUT;
		n = read(tool_fd, (char *)buf + done, size - done);
		if (n <= 0)
			return -EPIPE;
		done += n;
	}
	return 0;
}

struct event_msg {
	struct kvmi_msg_hdr hdr;
	struct kvmi_event ev;
	union {		/* the event's data, if it has any */
		struct kvmi_event_cr cr;
		struct kvmi_event_msr msr;
		struct kvmi_event_pf pf;
	};
};

/* Events that arrived while we waited for a command's reply. */
static struct event_msg queued[16];
static int nr_queued;

/* Sends a command; returns its error code and copies the reply. */
static int command(uint16_t id, const void *req, size_t req_size,
		   void *rpl, size_t rpl_size)
{
	struct kvmi_msg_hdr hdr = { .id = id, .size = req_size,
				    .seq = ++cmd_seq };
	struct kvmi_error_code ec;
	char buf[8192];

	memcpy(buf, &hdr, sizeof(hdr));
	memcpy(buf + sizeof(hdr), req, req_size);
	xwrite(buf, sizeof(hdr) + req_size);

	for (;;) {
		TEST_ASSERT(!xread(&hdr, sizeof(hdr), 5000),
			    "no reply to %u", id);
		TEST_ASSERT(!xread(buf, hdr.size, 5000), "short message");
		if (hdr.id != KVMI_EVENT)
			break;
		TEST_ASSERT(nr_queued < 16 &&
			    hdr.size <= sizeof(queued[0]) - sizeof(hdr),
			    "unexpected event");
		queued[nr_queued].hdr = hdr;
		memcpy(&queued[nr_queued++].ev, buf, hdr.size);
	}
	TEST_ASSERT(hdr.id == id && hdr.seq == cmd_seq,
		    "reply id %u seq %u, expected %u %u",
		    hdr.id, hdr.seq, id, cmd_seq);
	memcpy(&ec, buf, sizeof(ec));
	if (!ec.err && rpl)
		memcpy(rpl, buf + sizeof(ec), rpl_size);
	return ec.err;
}

/* Sends a command without waiting for its reply. */
static void tool_send_only(uint16_t id, const void *req, size_t req_size)
{
	struct kvmi_msg_hdr hdr = { .id = id, .size = req_size,
				    .seq = ++cmd_seq };
	char buf[8192];

	memcpy(buf, &hdr, sizeof(hdr));
	memcpy(buf + sizeof(hdr), req, req_size);
	xwrite(buf, sizeof(hdr) + req_size);
}

struct vcpu_cmd {
	struct kvmi_vcpu_hdr hdr;
	union {
		struct kvmi_control_events ctl;
		struct kvmi_pause_vcpu pause;
		struct kvmi_control_cr cr;
		struct kvmi_control_msr msr;
	};
};

static const char *event_name(unsigned int id)
{
	static const char * const names[] = {
		"UNHOOK", "CR", "MSR", "XSETBV", "BREAKPOINT", "HYPERCALL",
		"PF", "TRAP", "DESCRIPTOR", "CREATE_VCPU", "PAUSE_VCPU",
		"SINGLESTEP",
	};

	return id < KVMI_NUM_EVENTS ? names[id] : "?";
}

/*
 * The tool's answer to a watched CR or MSR write: it lets writes through,
 * but blocks vCPU 0's first CR4 write and replaces vCPU 1's first STAR
 * write, to show both.  Its CR4 and STAR answers are kept, to be checked
 * against what the guest reads back.
 */
static __u64 answer_write(const struct event_msg *msg)
{
	unsigned int v = msg->ev.vcpu;
	bool cr = msg->ev.event == KVMI_EVENT_CR;
	__u64 old = cr ? msg->cr.old_value : msg->msr.old_value;
	__u64 val = cr ? msg->cr.new_value : msg->msr.new_value;
	const char *what = "let through";

	TEST_ASSERT(v < NR_VCPUS, "event from vCPU %u", v);
	if (cr && msg->cr.cr == 4) {
		TEST_ASSERT(nr_cr4[v] < NR_WRITES, "extra CR4 write");
		if (v == 0 && !nr_cr4[v]) {
			blocked_cr4 = msg->cr;
			val = old;
			what = "blocked";
		}
		tool_answer[v].cr4[nr_cr4[v]++] = val;
	} else if (!cr && msg->msr.msr == MSR_STAR) {
		TEST_ASSERT(nr_star[v] < NR_WRITES, "extra STAR write");
		if (v == 1 && !nr_star[v]) {
			replaced_star = msg->msr;
			val = TOOL_STAR;
			what = "replaced";
		}
		tool_answer[v].star[nr_star[v]++] = val;
	}

	if (cr)
		printf("        write CR%u 0x%llx -> 0x%llx",
		       msg->cr.cr, old, msg->cr.new_value);
	else
		printf("        write MSR 0x%x 0x%llx -> 0x%llx",
		       msg->msr.msr, old, msg->msr.new_value);
	printf(" -> reply CONTINUE, new_val 0x%llx (%s)\n", val, what);
	return val;
}

/*
 * Receives one event and prints it; answers a CR or MSR write with
 * answer_write(), any other event with CONTINUE after it read the
 * registers.
 */
static int handle_one_event(int timeout_ms)
{
	struct event_msg msg;
	struct {
		struct kvmi_msg_hdr hdr;
		struct kvmi_vcpu_hdr vcpu;
		struct kvmi_event_reply reply;
		union {		/* only for CR and MSR events */
			struct kvmi_event_cr_reply cr;
			struct kvmi_event_msr_reply msr;
		};
	} rpl = {};
	size_t rpl_size = sizeof(rpl);
	struct {
		struct kvmi_vcpu_hdr vcpu;
		struct kvmi_get_registers req;
	} greq = {};
	struct kvmi_get_registers_reply regs;
	int err;

	if (nr_queued) {
		msg = queued[0];
		memmove(&queued[0], &queued[1], --nr_queued * sizeof(msg));
	} else {
		if (xread(&msg.hdr, sizeof(msg.hdr), timeout_ms))
			return -1;
		TEST_ASSERT(msg.hdr.size <= sizeof(msg) - sizeof(msg.hdr) &&
			    !xread(&msg.ev, msg.hdr.size, 5000),
			    "bad event message");
	}
	TEST_ASSERT(msg.hdr.id == KVMI_EVENT, "expected an event");

	printf("  event %-11s vCPU %u  seq %-3u rip 0x%llx  mode %u  cr0 0x%llx  cr3 0x%llx  efer 0x%llx\n",
	       event_name(msg.ev.event), msg.ev.vcpu, msg.hdr.seq,
	       msg.ev.arch.regs.rip, msg.ev.arch.mode, msg.ev.arch.sregs.cr0,
	       msg.ev.arch.sregs.cr3, msg.ev.arch.msrs.efer);
	if (msg.ev.event == KVMI_EVENT_UNHOOK)
		return msg.ev.event;

	if (msg.ev.event == KVMI_EVENT_PF) {
		__u64 entry = (msg.pf.gpa - sys_call_table_gpa) / 8;

		TEST_ASSERT(msg.pf.access == KVMI_PAGE_ACCESS_W &&
			    entry < NR_HOOKS, "PF event: access %u gpa 0x%llx",
			    msg.pf.access, msg.pf.gpa);
		/* Reported before it happens: the entry is still 0. */
		TEST_ASSERT(!sys_call_table_hva[entry],
			    "syscall table entry %llu written before the event",
			    entry);
		printf("        write to syscall table entry %llu at gpa 0x%llx (gva %s), not done yet\n",
		       entry, msg.pf.gpa,
		       msg.pf.gva == ~0ull ? "not given by NPT" : "given");
	}

	if (msg.ev.event == KVMI_EVENT_CR) {
		rpl.cr.new_val = answer_write(&msg);
	} else if (msg.ev.event == KVMI_EVENT_MSR) {
		rpl.msr.new_val = answer_write(&msg);
	} else {
		/* The vCPU waits for us and answers commands meanwhile. */
		greq.vcpu.vcpu = msg.ev.vcpu;
		err = command(KVMI_GET_REGISTERS, &greq, sizeof(greq),
			      &regs, sizeof(regs));
		TEST_ASSERT(!err, "GET_REGISTERS during the event: %d", err);
		printf("        GET_REGISTERS while it waits: rip 0x%llx rax 0x%llx rdi 0x%llx -> reply CONTINUE\n",
		       regs.regs.rip, regs.regs.rax, regs.regs.rdi);
		/* A longer reply than the event expects breaks the session. */
		rpl_size -= sizeof(rpl.cr);
	}

	rpl.hdr.id = KVMI_EVENT_REPLY;
	rpl.hdr.seq = msg.hdr.seq;
	rpl.hdr.size = rpl_size - sizeof(rpl.hdr);
	rpl.vcpu.vcpu = msg.ev.vcpu;
	rpl.reply.event = msg.ev.event;
	rpl.reply.action = KVMI_EVENT_ACTION_CONTINUE;
	xwrite(&rpl, rpl_size);
	return msg.ev.event;
}

/*
 * Benchmark: the cost of the HYPERCALL event, against a baseline measured
 * in the same boot (the machine is noisy): the same guest loop of agent
 * hypercalls, not hooked (KVM answers -KVM_ENOSYS in the kernel), hooked
 * with the event disabled, and with every call going to the tool and back.
 */
#define BENCH_CALLS	2000
#define BENCH_ROUNDS	3

static void bench_guest(void)
{
	int i;

	for (;;) {
		for (i = 0; i < BENCH_CALLS; i++)
			agent_hypercall();
		GUEST_SYNC(0);
	}
}

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* Runs BENCH_CALLS hypercalls; returns the time per call in us. */
static double bench_round(struct kvm_vcpu *vcpu)
{
	struct ucall uc;
	double t0 = now_us();

	vcpu_run(vcpu);
	TEST_ASSERT(get_ucall(vcpu, &uc) == UCALL_SYNC, "bench guest");
	return (now_us() - t0) / BENCH_CALLS;
}

static double bench_best(struct kvm_vcpu *vcpu)
{
	double best = 1e12, t;
	int i;

	for (i = 0; i < BENCH_ROUNDS; i++) {
		t = bench_round(vcpu);
		if (t < best)
			best = t;
	}
	return best;
}

/* The tool: answers CONTINUE to every event, until the socket closes. */
static void *bench_tool(void *arg)
{
	int fd = *(int *)arg;
	struct {
		struct kvmi_msg_hdr hdr;
		struct kvmi_vcpu_hdr vcpu;
		struct kvmi_event_reply reply;
	} rpl = { };
	struct kvmi_msg_hdr hdr;
	struct kvmi_event ev;
	char body[8192];

	for (;;) {
		if (read(fd, &hdr, sizeof(hdr)) != sizeof(hdr))
			break;
		if (hdr.size && read(fd, body, hdr.size) != hdr.size)
			break;
		if (hdr.id != KVMI_EVENT)
			continue;	/* the reply to CONTROL_EVENTS */
		memcpy(&ev, body, sizeof(ev));
		rpl.hdr.id = KVMI_EVENT_REPLY;
		rpl.hdr.seq = hdr.seq;
		rpl.hdr.size = sizeof(rpl) - sizeof(rpl.hdr);
		rpl.vcpu.vcpu = ev.vcpu;
		rpl.reply.event = ev.event;
		if (write(fd, &rpl, sizeof(rpl)) != sizeof(rpl))
			break;
	}
	return NULL;
}

static void benchmark(void)
{
	struct kvm_introspection_feature all = { .allow = 1, .id = -1 };
	struct kvm_introspection_hook hook = { };
	struct vcpu_cmd c = { .hdr.vcpu = 0 };
	double base, idle, event;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	pthread_t tool;
	int sv[2];

	vm = vm_create_with_one_vcpu(&vcpu, bench_guest);
	bench_round(vcpu);	/* warm up */
	base = bench_best(vcpu);

	TEST_ASSERT(!socketpair(AF_UNIX, SOCK_STREAM, 0, sv), "socketpair");
	hook.fd = sv[0];
	vm_ioctl(vm, KVM_INTROSPECTION_HOOK, &hook);
	vm_ioctl(vm, KVM_INTROSPECTION_COMMAND, &all);
	vm_ioctl(vm, KVM_INTROSPECTION_EVENT, &all);
	idle = bench_best(vcpu);

	/*
	 * The vCPU runs CONTROL_EVENTS before it enters the guest; the tool
	 * thread skips its reply and answers the events.
	 */
	pthread_create(&tool, NULL, bench_tool, &sv[1]);
	tool_fd = sv[1];
	c.ctl.event_id = KVMI_EVENT_HYPERCALL;
	c.ctl.enable = 1;
	tool_send_only(KVMI_CONTROL_EVENTS, &c, sizeof(c.hdr) + sizeof(c.ctl));
	bench_round(vcpu);	/* warm up */
	event = bench_best(vcpu);

	vm_ioctl(vm, KVM_INTROSPECTION_UNHOOK, NULL);
	pthread_join(tool, NULL);
	close(sv[0]);
	close(sv[1]);
	kvm_vm_free(vm);

	printf("\nbenchmark: %d agent hypercalls per round, best of %d rounds, same boot\n",
	       BENCH_CALLS, BENCH_ROUNDS);
	printf("benchmark: not hooked (baseline)           %8.2f us/call  ratio 1.00\n",
	       base);
	printf("benchmark: hooked, HYPERCALL event off     %8.2f us/call  ratio %.2f\n",
	       idle, idle / base);
	printf("benchmark: HYPERCALL event, tool answers   %8.2f us/call  ratio %.2f (+%.2f us per event)\n",
	       event, event / base, event - base);
}

int main(void)
{
	struct kvm_introspection_feature all = { .allow = 1, .id = -1 };
	struct kvm_introspection_hook hook = { };
	struct kvmi_get_version_reply version;
	struct kvmi_get_guest_info_reply info;
	struct kvm_vcpu *vcpus[NR_VCPUS];
	pthread_t threads[NR_VCPUS];
	struct kvmi_control_vm_events vm_ev = { .event_id = KVMI_EVENT_UNHOOK,
						.enable = 1 };
	int counts[KVMI_NUM_EVENTS] = { };
	uint64_t before[NR_VCPUS], *counter;
	struct after_writes *read;
	struct kvm_vm *vm;
	int sv[2], i, j, ev;

	printf("kvmi_demo: KVM introspection on Linux %s\n",
	       "6.12 (patched)");
	TEST_REQUIRE(kvm_check_cap(KVM_CAP_INTROSPECTION));

	vm = vm_create_with_vcpus(NR_VCPUS, guest_code, vcpus);
	for (i = 0; i < NR_VCPUS; i++)
		vcpu_args_set(vcpus[i], 1, i);

	TEST_ASSERT(!socketpair(AF_UNIX, SOCK_STREAM, 0, sv), "socketpair");
	tool_fd = sv[1];
	hook.fd = sv[0];
	memcpy(hook.uuid, "kvmi-demo-vm-001", 16);
	vm_ioctl(vm, KVM_INTROSPECTION_HOOK, &hook);
	vm_ioctl(vm, KVM_INTROSPECTION_COMMAND, &all);
	vm_ioctl(vm, KVM_INTROSPECTION_EVENT, &all);
	close(sv[0]);	/* KVM holds its own reference */
	printf("VMM: VM with %d vCPUs hooked; all commands and events allowed\n",
	       NR_VCPUS);

	/* vCPU commands are served by vCPUs inside KVM_RUN. */
	for (i = 0; i < NR_VCPUS; i++)
		pthread_create(&threads[i], NULL, vcpu_thread, vcpus[i]);

	TEST_ASSERT(!command(KVMI_GET_VERSION, NULL, 0, &version,
			     sizeof(version)), "GET_VERSION");
	TEST_ASSERT(!command(KVMI_GET_GUEST_INFO, NULL, 0, &info,
			     sizeof(info)), "GET_GUEST_INFO");
	printf("tool: KVMI version %u, %u vCPUs\n", version.version,
	       info.vcpu_count);

	for (i = 0; i < NR_VCPUS; i++) {
		struct vcpu_cmd c = { .hdr.vcpu = i };

		c.ctl.event_id = KVMI_EVENT_HYPERCALL;
		c.ctl.enable = 1;
		TEST_ASSERT(!command(KVMI_CONTROL_EVENTS, &c,
				     sizeof(c.hdr) + sizeof(c.ctl), NULL, 0),
			    "CONTROL_EVENTS");
	}
	TEST_ASSERT(!command(KVMI_CONTROL_VM_EVENTS, &vm_ev, sizeof(vm_ev),
			     NULL, 0), "CONTROL_VM_EVENTS");
	printf("tool: HYPERCALL enabled on every vCPU, UNHOOK enabled\n");

	*(int *)addr_gva2hva(vm, (vm_vaddr_t)&go) = 1;
	printf("tool: waiting for the guest agent's hypercalls\n");
	for (i = 0; i < NR_VCPUS * NR_AGENT_CALLS; i++) {
		ev = handle_one_event(10000);
		TEST_ASSERT(ev >= 0, "no event from the guest");
		counts[ev]++;
	}

	/* A write is reported once both its event and its register are on. */
	for (i = 0; i < NR_VCPUS; i++) {
		struct vcpu_cmd c = { .hdr.vcpu = i };

		c.ctl = (struct kvmi_control_events){ .event_id = KVMI_EVENT_CR,
						      .enable = 1 };
		TEST_ASSERT(!command(KVMI_CONTROL_EVENTS, &c,
				     sizeof(c.hdr) + sizeof(c.ctl), NULL, 0),
			    "CONTROL_EVENTS CR");
		c.ctl.event_id = KVMI_EVENT_MSR;
		TEST_ASSERT(!command(KVMI_CONTROL_EVENTS, &c,
				     sizeof(c.hdr) + sizeof(c.ctl), NULL, 0),
			    "CONTROL_EVENTS MSR");
		c.cr = (struct kvmi_control_cr){ .enable = 1, .cr = 3 };
		TEST_ASSERT(!command(KVMI_CONTROL_CR, &c,
				     sizeof(c.hdr) + sizeof(c.cr), NULL, 0),
			    "CONTROL_CR 3");
		c.cr.cr = 4;
		TEST_ASSERT(!command(KVMI_CONTROL_CR, &c,
				     sizeof(c.hdr) + sizeof(c.cr), NULL, 0),
			    "CONTROL_CR 4");
		c.msr = (struct kvmi_control_msr){ .enable = 1, .msr = MSR_STAR };
		TEST_ASSERT(!command(KVMI_CONTROL_MSR, &c,
				     sizeof(c.hdr) + sizeof(c.msr), NULL, 0),
			    "CONTROL_MSR STAR");
	}
	printf("tool: CR and MSR events enabled on every vCPU, watching CR3, CR4 and MSR_STAR (0x%x)\n",
	       MSR_STAR);

	*(int *)addr_gva2hva(vm, (vm_vaddr_t)&go) = 2;
	printf("tool: waiting for the guest's writes; blocking vCPU 0's first CR4 write, replacing vCPU 1's first STAR write\n");
	for (i = 0; i < NR_VCPUS * NR_WRITES * 3; i++) {	/* CR4, CR3, STAR */
		ev = handle_one_event(10000);
		TEST_ASSERT(ev >= 0, "no CR or MSR event from the guest");
		counts[ev]++;
	}

	/* Memory: write-protect the guest kernel's syscall table. */
	{
		struct {
			struct kvmi_set_page_access req;
			struct kvmi_page_access_entry e;
		} set = { .req.count = 1 };
		struct {
			struct kvmi_get_page_access req;
			__u64 gpa;
		} get = { .req.count = 1 };
		uint8_t access[8];

		set.e.gpa = addr_gva2gpa(vm, (vm_vaddr_t)guest_sys_call_table);
		sys_call_table_gpa = set.e.gpa;
		sys_call_table_hva = addr_gva2hva(vm,
				(vm_vaddr_t)guest_sys_call_table);
		set.e.access = KVMI_PAGE_ACCESS_R | KVMI_PAGE_ACCESS_X;
		get.gpa = set.e.gpa;
		for (i = 0; i < NR_VCPUS; i++) {
			struct vcpu_cmd c = { .hdr.vcpu = i };

			c.ctl = (struct kvmi_control_events){
				.event_id = KVMI_EVENT_PF, .enable = 1 };
			TEST_ASSERT(!command(KVMI_CONTROL_EVENTS, &c,
					     sizeof(c.hdr) + sizeof(c.ctl),
					     NULL, 0), "CONTROL_EVENTS PF");
		}
		TEST_ASSERT(!command(KVMI_SET_PAGE_ACCESS, &set, sizeof(set),
				     NULL, 0), "SET_PAGE_ACCESS");
		TEST_ASSERT(!command(KVMI_GET_PAGE_ACCESS, &get, sizeof(get),
				     access, 1), "GET_PAGE_ACCESS");
		printf("tool: PF events enabled; the guest kernel's syscall table (gpa 0x%llx) made read/execute-only (access now %u)\n",
		       set.e.gpa, access[0]);
		TEST_ASSERT(access[0] == set.e.access, "GET_PAGE_ACCESS %u",
			    access[0]);

		*(int *)addr_gva2hva(vm, (vm_vaddr_t)&go) = 3;
		printf("tool: waiting for the guest's writes to it\n");
		for (i = 0; i < NR_HOOKS; i++) {
			ev = handle_one_event(10000);
			TEST_ASSERT(ev == KVMI_EVENT_PF, "no PF event");
			counts[ev]++;
		}
		set.e.access |= KVMI_PAGE_ACCESS_W;
		TEST_ASSERT(!command(KVMI_SET_PAGE_ACCESS, &set, sizeof(set),
				     NULL, 0), "SET_PAGE_ACCESS");
		printf("tool: restriction lifted\n");
	}

	printf("tool: pausing every vCPU (KVMI_PAUSE_VCPU, wait=1)\n");
	for (i = 0; i < NR_VCPUS; i++) {
		struct vcpu_cmd c = { .hdr.vcpu = i };

		c.pause.wait = 1;
		TEST_ASSERT(!command(KVMI_PAUSE_VCPU, &c,
				     sizeof(c.hdr) + sizeof(c.pause), NULL, 0),
			    "PAUSE_VCPU");
	}
	for (i = 0; i < NR_VCPUS; i++) {
		ev = handle_one_event(10000);
		TEST_ASSERT(ev >= 0, "no PAUSE_VCPU event");
		counts[ev]++;
	}

	counter = addr_gva2hva(vm, (vm_vaddr_t)&guest_counter);
	for (i = 0; i < NR_VCPUS; i++)
		before[i] = counter[i];
	usleep(200000);

	printf("VMM: KVM_INTROSPECTION_PREUNHOOK\n");
	vm_ioctl(vm, KVM_INTROSPECTION_PREUNHOOK, NULL);
	ev = handle_one_event(5000);
	TEST_ASSERT(ev == KVMI_EVENT_UNHOOK, "no UNHOOK event");
	counts[ev]++;
	close(tool_fd);
	printf("tool: got UNHOOK, closed the socket\n");
	vm_ioctl(vm, KVM_INTROSPECTION_UNHOOK, NULL);
	printf("VMM: KVM_INTROSPECTION_UNHOOK done\n");

	printf("\nsummary: %d HYPERCALL, %d CR, %d MSR, %d PF, %d PAUSE_VCPU, %d UNHOOK events, all answered\n",
	       counts[KVMI_EVENT_HYPERCALL], counts[KVMI_EVENT_CR],
	       counts[KVMI_EVENT_MSR], counts[KVMI_EVENT_PF],
	       counts[KVMI_EVENT_PAUSE_VCPU], counts[KVMI_EVENT_UNHOOK]);
	for (i = 0; i < NR_VCPUS; i++)
		printf("summary: vCPU %d kept running after its events (guest counter %llu -> %llu)\n",
		       i, (unsigned long long)before[i],
		       (unsigned long long)counter[i]);
	for (i = 0; i < NR_VCPUS; i++)
		TEST_ASSERT(counter[i] > before[i], "vCPU %d stopped", i);

	/* Both vCPUs count, so they are past their writes and read-backs. */
	read = addr_gva2hva(vm, (vm_vaddr_t)&guest_read);
	printf("summary: vCPU 0 CR4 write 0x%llx -> 0x%llx blocked: the guest read back 0x%llx\n",
	       blocked_cr4.old_value, blocked_cr4.new_value,
	       (unsigned long long)read[0].cr4[0]);
	printf("summary: vCPU 1 STAR write 0x%llx -> 0x%llx replaced: the guest read back 0x%llx\n",
	       replaced_star.old_value, replaced_star.new_value,
	       (unsigned long long)read[1].star[0]);
	TEST_ASSERT(read[0].cr4[0] == blocked_cr4.old_value,
		    "vCPU 0's blocked CR4 write went through");
	TEST_ASSERT(read[1].star[0] == TOOL_STAR,
		    "vCPU 1's STAR write was not replaced");
	for (i = 0; i < NR_VCPUS; i++)
		for (j = 0; j < NR_WRITES; j++)
			TEST_ASSERT(read[i].cr4[j] == tool_answer[i].cr4[j] &&
				    read[i].star[j] == tool_answer[i].star[j],
				    "vCPU %d write %d: the guest read CR4 0x%llx STAR 0x%llx, the tool answered 0x%llx 0x%llx",
				    i, j, (unsigned long long)read[i].cr4[j],
				    (unsigned long long)read[i].star[j],
				    (unsigned long long)tool_answer[i].cr4[j],
				    (unsigned long long)tool_answer[i].star[j]);
	printf("summary: every CR4 and STAR value the guest read back is the tool's answer\n");
	{
		uint64_t *table = addr_gva2hva(vm,
					       (vm_vaddr_t)guest_sys_call_table);

		for (i = 0; i < NR_HOOKS; i++)
			TEST_ASSERT(table[i] == HOOK_ADDR + i,
				    "syscall table entry %d: 0x%llx", i,
				    (unsigned long long)table[i]);
		printf("summary: the %d syscall table writes were reported before they happened (and let through)\n",
		       NR_HOOKS);
	}

	benchmark();
	printf("kvmi_demo: OK\n");
	/* The vCPU threads run until the process exits. */
	exit(0);
}
