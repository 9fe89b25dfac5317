//! stile-edge: placeholder until its issue lands.
