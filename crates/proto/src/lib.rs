//! stile-proto: placeholder until its issue lands.
