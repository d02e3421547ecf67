//! `script_user`: a running agent runs a real's notify script (`notify_up`, on the first pass:
//! `alpha`) and a MISC_CHECK as that user.

use std::{net::Ipv4Addr, os::unix::fs::PermissionsExt as _, path::Path, time::Duration};

use lb_tests::{DrTopology, require_root, scratch_dir, wait_until};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

fn testpeer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lb-testpeer"))
}

#[test]
fn notify_and_misc_check_run_as_the_script_user() {
    if !require_root("script_user") {
        return;
    }
    let dr = DrTopology::build("su", 1, VIP, testpeer()).expect("topology");
    // World-writable: the scripts, no longer root, write their identity here.
    let out = scratch_dir("lb-script-user-").expect("scratch");
    std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let notify = out.path().join("notify");
    let misc = out.path().join("misc");
    let conf = format!(
        "script_user = \"nobody:nogroup\"\n\
         [[virtual_server]]\nvip = \"{VIP}\"\nport = 80\ninterface = \"eth0\"\ndelay_loop = 0.5\nalpha = true\n\
         [[virtual_server.real_server]]\naddress = \"{}\"\nnotify_up = \"id -u > {n}; id -g >> {n}\"\n\
         [virtual_server.real_server.misc_check]\nmisc_path = \"sh -c 'id -u > {m}'\"\nmisc_timeout = 2\n",
        DrTopology::real_ip(0),
        n = notify.display(),
        m = misc.display(),
    );
    let (agent, _dir) = dr.start_agent(&conf, &[]).expect("lb run");
    agent.wait_all_backends("up", Duration::from_secs(10)).expect("the misc check passes");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    assert!(wait_until(Duration::from_secs(5), || read(&notify).lines().count() == 2), "no notify");
    assert_eq!(read(&notify), "65534\n65534\n", "notify_up as nobody:nogroup");
    assert_eq!(read(&misc), "65534\n", "MISC_CHECK as nobody");
    assert!(agent.stderr().contains("scripts run as the script user"), "{}", agent.stderr());
}
