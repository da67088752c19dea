//! Who the names in a recipients list can refer to: the fleet's hosts and admins.

/// Who a name in a recipients list can refer to.
pub trait Directory {
    /// Is `name` a host (`keys/hosts/<name>.pub`)?
    fn is_host(&self, name: &str) -> bool;
    /// Is `name` an admin (`keys/admins/<name>.pub`)?
    fn is_admin(&self, name: &str) -> bool;
    /// Every host name, to suggest one for a typo.
    fn host_names(&self) -> Vec<&str> {
        Vec::new()
    }
    /// Every admin name, to suggest one for a typo.
    fn admin_names(&self) -> Vec<&str> {
        Vec::new()
    }
}
