"""The LDAPv3 server: ldaptor's BER codec in front of mailsuite's own directory and ACL."""
