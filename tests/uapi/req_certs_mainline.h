/* SPDX-License-Identifier: GPL-2.0 */
/* The interface between req_certs_mainline.c and req_certs_compat.c. */
#include <stddef.h>
#include <stdint.h>

struct mainline_numbers {
	unsigned int exit_snp_req_certs, sev_snp_enable_req_certs;
	unsigned int grp_sev, sev_snp_req_certs;
	size_t size, run_offset, gpa, npages, ret;
};

void mainline_numbers(struct mainline_numbers *n);
int mainline_read_exit(const void *page, uint64_t *gpa, uint64_t *npages, uint64_t *ret);
void mainline_answer(void *page, uint64_t ret, uint64_t npages);
