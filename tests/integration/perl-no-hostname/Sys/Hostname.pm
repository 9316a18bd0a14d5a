# Found before Perl's own Sys::Hostname when the integration tests run
# swaks (harness.swaks puts this directory on PERL5LIB). swaks looks up its
# own host name with gethostbyname() at start, which waits on DNS when
# /etc/hosts lacks the name and the resolver is slow; when this module
# fails to load, swaks skips that lookup. The tests always pass --helo and
# --from, the two things swaks would have used the name for.
die "Sys::Hostname is disabled while postern's tests run swaks\n";
