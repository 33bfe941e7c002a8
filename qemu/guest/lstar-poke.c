// SPDX-License-Identifier: GPL-2.0
/*
 * Guest side of the "blocked LSTAR write" test: try to point the syscall
 * entry (MSR_LSTAR) elsewhere through /dev/cpu/0/msr.  If the host's
 * introspection tool did not block the write, the next system call jumps
 * to the bogus address and the guest dies; if it did, LSTAR reads back
 * unchanged.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#define MSR_LSTAR 0xc0000082

int main(void)
{
	uint64_t before, bogus, after;
	int fd = open("/dev/cpu/0/msr", O_RDWR);

	if (fd < 0 || pread(fd, &before, 8, MSR_LSTAR) != 8) {
		printf("guest: lstar-poke: cannot read LSTAR (CONFIG_X86_MSR?)\n");
		return 1;
	}
	bogus = before + 0x1000;
	printf("guest: LSTAR is 0x%llx, writing 0x%llx\n",
	       (unsigned long long)before, (unsigned long long)bogus);
	fflush(stdout);
	if (pwrite(fd, &bogus, 8, MSR_LSTAR) != 8)
		printf("guest: LSTAR write failed\n");
	if (pread(fd, &after, 8, MSR_LSTAR) != 8)
		return 1;
	printf("guest: LSTAR after the write: 0x%llx (%s)\n",
	       (unsigned long long)after,
	       after == before ? "write blocked" : "CHANGED");
	return after == before ? 0 : 1;
}
