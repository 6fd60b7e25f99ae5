//! The board's peripherals, simulated: QEMU's mps2 boards have no power
//! rail, I2C sensor or radio, so each "driver" here waits on
//! `embassy_time::Timer` the way a real one waits on its hardware, records
//! what it did in the [trace](crate::trace), and fails or hangs when the
//! scenario's [`Faults`] say so.

use core::fmt;

use embassy_time::Timer;

use crate::trace::{self, Event};

/// Why a peripheral operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum HwError {
    /// The radio did not answer.
    NoAnswer,
    /// The I2C bus did not release: a device holds SDA low.
    BusStuck,
    /// The SPI controller got no clock.
    NoClock,
}

impl fmt::Display for HwError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HwError::NoAnswer => "no answer",
            HwError::BusStuck => "bus stuck (SDA low)",
            HwError::NoClock => "no clock",
        })
    }
}

/// What goes wrong in one scenario.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// The radio does not answer its first `radio_silent_starts` starts.
    pub radio_silent_starts: u8,
    /// The sensor never answers a probe.
    pub sensor_hangs: bool,
    /// Releasing the I2C bus always fails.
    pub bus_stuck: bool,
    /// The SPI bus never comes up.
    pub spi_dead: bool,
}

/// Everything the bring-up touches. Steps and rollbacks borrow it mutably,
/// one at a time — except the two buses, which are independent: the
/// bring-up initialises them at the same time, each borrowing its own.
pub struct Board {
    pub power: PowerRail,
    pub i2c: I2cBus,
    pub spi: SpiBus,
    pub sensor: Sensor,
    pub radio: Radio,
}

impl Board {
    /// A board with everything off, that will misbehave as `faults` say.
    pub fn new(faults: Faults) -> Self {
        Self {
            power: PowerRail { on: false },
            i2c: I2cBus { up: false, stuck: faults.bus_stuck },
            spi: SpiBus { up: false, dead: faults.spi_dead },
            sensor: Sensor { hangs: faults.sensor_hangs },
            radio: Radio { up: false, silent_starts: faults.radio_silent_starts },
        }
    }
}

/// The 3.3 V rail that feeds the sensor and the radio.
pub struct PowerRail {
    on: bool,
}

impl PowerRail {
    /// Switches the rail on and waits for it to settle; returns its voltage
    /// in mV.
    pub async fn on(&mut self) -> Result<u16, HwError> {
        Timer::after_millis(2).await;
        self.on = true;
        trace::record(Event::RailOn);
        Ok(3300)
    }

    pub async fn off(&mut self) -> Result<(), HwError> {
        Timer::after_millis(1).await;
        self.on = false;
        trace::record(Event::RailOff);
        Ok(())
    }

    pub fn is_on(&self) -> bool {
        self.on
    }
}

/// The I2C controller the sensor sits on.
pub struct I2cBus {
    up: bool,
    stuck: bool,
}

impl I2cBus {
    /// Resets the controller and waits for the bus to go idle (4 ms).
    pub async fn init(&mut self) -> Result<(), HwError> {
        Timer::after_millis(4).await;
        self.up = true;
        trace::record(Event::BusUp);
        Ok(())
    }

    pub async fn release(&mut self) -> Result<(), HwError> {
        Timer::after_millis(1).await;
        if self.stuck {
            trace::record(Event::BusStuck);
            return Err(HwError::BusStuck);
        }
        self.up = false;
        trace::record(Event::BusDown);
        Ok(())
    }

    pub fn is_up(&self) -> bool {
        self.up
    }
}

/// The SPI controller the flash and the display sit on; independent of the
/// I2C bus.
pub struct SpiBus {
    up: bool,
    dead: bool,
}

impl SpiBus {
    /// Starts the controller's clock and waits for it to lock (6 ms).
    pub async fn init(&mut self) -> Result<(), HwError> {
        Timer::after_millis(6).await;
        if self.dead {
            trace::record(Event::SpiNack);
            return Err(HwError::NoClock);
        }
        self.up = true;
        trace::record(Event::SpiUp);
        Ok(())
    }

    pub async fn release(&mut self) -> Result<(), HwError> {
        Timer::after_millis(1).await;
        self.up = false;
        trace::record(Event::SpiDown);
        Ok(())
    }

    pub fn is_up(&self) -> bool {
        self.up
    }
}

/// A sensor on the I2C bus.
pub struct Sensor {
    hangs: bool,
}

impl Sensor {
    /// The chip id of a sensor that answers.
    pub const CHIP_ID: u8 = 0x5A;

    /// Reads the sensor's chip id. A hung sensor never answers: only a
    /// timeout ends the wait.
    pub async fn probe(&mut self) -> Result<u8, HwError> {
        trace::record(Event::SensorProbe);
        if self.hangs {
            core::future::pending::<()>().await;
        }
        Timer::after_millis(2).await;
        trace::record(Event::SensorReady);
        Ok(Self::CHIP_ID)
    }
}

/// The radio module.
pub struct Radio {
    up: bool,
    silent_starts: u8,
}

impl Radio {
    pub async fn start(&mut self) -> Result<(), HwError> {
        Timer::after_millis(3).await;
        if self.silent_starts > 0 {
            self.silent_starts -= 1;
            trace::record(Event::RadioNack);
            return Err(HwError::NoAnswer);
        }
        self.up = true;
        trace::record(Event::RadioUp);
        Ok(())
    }

    pub async fn stop(&mut self) -> Result<(), HwError> {
        Timer::after_millis(1).await;
        self.up = false;
        trace::record(Event::RadioDown);
        Ok(())
    }

    pub fn is_up(&self) -> bool {
        self.up
    }
}
