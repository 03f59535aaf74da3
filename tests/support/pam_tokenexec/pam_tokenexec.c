/*
 * pam_tokenexec: a PAM auth module that runs a checker with the whole password on its stdin.
 *
 *   auth required /path/pam_tokenexec.so /path/checker ARGS...
 *
 * Linux-PAM's pam_exec (expose_authtok) hands its child at most 511 bytes of the password, and
 * an RDS IAM auth token signed with temporary credentials (IRSA, assume-role) is longer: its
 * X-Amz-Security-Token alone is several hundred bytes. This module does what pam_exec does for
 * the auth stack (PAM_USER and PAM_RHOST in the environment, the password and a NUL on stdin,
 * success only when the checker exits 0) without the limit. The checker decides; this module
 * never looks at the token. For tests only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <security/pam_ext.h>
#include <security/pam_modules.h>

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

PAM_EXTERN int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv) {
    (void)flags;
    if (argc < 1) {
        pam_syslog(pamh, 3, "pam_tokenexec: no checker given");
        return PAM_SERVICE_ERR;
    }
    const char *user = NULL, *rhost = NULL, *token = NULL;
    if (pam_get_user(pamh, &user, NULL) != PAM_SUCCESS || user == NULL) return PAM_USER_UNKNOWN;
    pam_get_item(pamh, PAM_RHOST, (const void **)&rhost);
    int rc = pam_get_authtok(pamh, PAM_AUTHTOK, &token, NULL);
    if (rc != PAM_SUCCESS || token == NULL) return PAM_AUTH_ERR;

    int fds[2];
    if (pipe(fds) != 0) return PAM_SYSTEM_ERR;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return PAM_SYSTEM_ERR;
    }
    if (pid == 0) {
        dup2(fds[0], 0);
        close(fds[0]);
        close(fds[1]);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
        }
        setenv("PAM_USER", user, 1);
        setenv("PAM_RHOST", rhost ? rhost : "", 1);
        setenv("PAM_TYPE", "auth", 1);
        char **args = calloc((size_t)argc + 1, sizeof(char *));
        if (args == NULL) _exit(126);
        for (int i = 0; i < argc; i++) args[i] = (char *)argv[i];
        execv(args[0], args);
        _exit(127);
    }
    close(fds[0]);
    /* The checker may exit before reading everything: no SIGPIPE for the caller. */
    void (*old)(int) = signal(SIGPIPE, SIG_IGN);
    write_all(fds[1], token, strlen(token) + 1);
    close(fds[1]);
    signal(SIGPIPE, old);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return PAM_SYSTEM_ERR;
    }
    return (WIFEXITED(status) && WEXITSTATUS(status) == 0) ? PAM_SUCCESS : PAM_AUTH_ERR;
}

PAM_EXTERN int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv) {
    (void)pamh;
    (void)flags;
    (void)argc;
    (void)argv;
    return PAM_SUCCESS;
}
